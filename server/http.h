/* The HTTP surface: bridle's own HTTP/1.1 server (server/h1.h) on the app's
 * event_base, the routes, limits and error replies. Keep every detail of
 * the HTTP layer behind this header and the server folder, so it stays a
 * local choice (DEVELOPERS.md: why not libevhtp, why not evhttp). */
#ifndef BRIDLE_HTTP_H
#define BRIDLE_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include "lib/buf.h"
#include "server/app.h"
#include "server/h1.h"

/* Binds host:port (backlog 4096) for n workers into fds[0..n-1]. Returns
 * 0, or -1 with a reason in err; an address another process listens on is
 * refused ("address already in use"), so a second gateway cannot share,
 * and silently split, the first one's traffic. n = 1: one socket without
 * SO_REUSEPORT; n > 1: n SO_REUSEPORT sockets of one port group that only
 * this process creates (http.c says how). Call it before forking. */
int http_listen(const char *host, int port, int n, int *fds, char *err, size_t errlen);
/* Serves the listening socket fd (h1 owns it from here; closed on error).
 * With a->worker >= 0 every reply says `x-bridle-worker: INDEX`. */
int http_start(app *a, evutil_socket_t fd, char *err, size_t errlen);
/* Stops accepting new connections (graceful drain). */
void http_stop_accepting(app *a);
void http_free(app *a);

/* What bridle reads from a request's headers, found in one pass. */
typedef struct request_headers {
    int count;
    int64_t bytes;
    const char *authorization, *x_api_key;
    const char *task, *agent, *feature; /* x-bridle-task / -agent / -feature */
    const char *tier;                   /* x-bridle-tier */
    const char *idempotency_key;        /* Idempotency-Key (the last one) */
    int idempotency_keys;               /* how many were sent: at most one is allowed */
    const char *cache_control;          /* Cache-Control */
    const char *cache;                  /* x-bridle-cache */
    const char *anthropic_version;      /* anthropic-version: an Anthropic SDK */
    const char *anthropic_beta;         /* anthropic-beta (forwarded to Anthropic models) */
} request_headers;

/* Response header lines collected in a buf (buf_add_header: "name:
 * value\r\n"), added to the reply as they are. */
void http_head_flush(h1_req *req, buf *head);
/* Sends body as the whole response. */
void http_reply(app *a, h1_req *req, int status, const char *content_type, const char *body,
                size_t len);

/* Sends an OpenAI error JSON {"error":{"message","type","param","code"}}
 * with `status`; `should_retry` false adds `x-should-retry: false`. */
void http_reply_error(app *a, h1_req *req, int status, const char *type, const char *code,
                      const char *param, const char *message, bool should_retry);
/* Sends a JSON body with `status`. */
void http_reply_json(app *a, h1_req *req, int status, const char *body, size_t len);
/* Counts a reply by status class. */
void http_count_reply(app *a, int status);

/* A request answered after some I/O (a database query): held, it counts
 * as in flight, and a client that leaves meanwhile is noted so that the
 * request is released instead of answered. Embedded in the caller's
 * state, which must not move while held. */
typedef struct http_held {
    app *a;
    h1_req *req;
    bool gone; /* the client left */
} http_held;
void http_hold(http_held *h, app *a, h1_req *req);
/* Ends the hold: true when the client is still there (answer it now),
 * false when it left (its request is released here). */
bool http_unhold(http_held *h);

/* A fresh request id ("req_" + 24 hex) into out (32 bytes). */
void http_new_request_id(char out[32]);

#endif

/* bridle's HTTP/1.1 server on the app's event_base: connections, request
 * framing and replies, with the request line and headers parsed by
 * picohttpparser (lib/picohttpparser). It replaced libevent's evhttp, whose
 * per-header allocations, printf'd replies and per-request epoll changes
 * cost about a quarter of a request's instructions (bench/RESULTS.md).
 *
 * One request at a time per connection: pipelined requests wait in the
 * connection's buffer until the one before is answered. A request's
 * memory (target, headers, body) stays valid until its reply is complete,
 * or, when the client left first, until h1_req_release. */
#ifndef BRIDLE_H1_H
#define BRIDLE_H1_H

#include <event2/util.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

struct event_base;
typedef struct h1_server h1_server;
typedef struct h1_req h1_req;

typedef enum { H1_GET, H1_POST, H1_PUT, H1_DELETE, H1_HEAD, H1_OPTIONS, H1_OTHER } h1_method;

typedef struct h1_options {
    size_t max_body_bytes;     /* a longer body: error 413 */
    size_t max_upload_bytes;   /* ... but for a target starting with upload_prefix */
    const char *upload_prefix; /* NULL: none */
    size_t max_header_bytes;   /* the request line and headers may reach 4x this
                                  (at least 64 KiB) before error 431; the exact
                                  limits are the caller's to check */
    int64_t read_timeout_ms;   /* a whole request must arrive within this (and an idle
                                  keep-alive connection lives this long) */
    int64_t max_connections;   /* accepting pauses at this many open connections */
    char extra_head[64];       /* header lines ("name: value\r\n") every reply carries, or "" */
} h1_options;

/* Called for every request received whole, and for one that could not be
 * read (h1_req_error): the handler replies, now or later. */
typedef void (*h1_handler)(h1_req *req, void *arg);

/* Serves the listening socket fd (bound and listening; h1 closes it). NULL
 * when out of memory. */
h1_server *h1_server_new(struct event_base *base, evutil_socket_t fd, const h1_options *o,
                         h1_handler on_request, void *arg);
/* Stops accepting (draining); connections open stay served. */
void h1_server_stop_accepting(h1_server *s);
/* Closes every connection and the listening socket. */
void h1_server_free(h1_server *s);
evutil_socket_t h1_server_fd(const h1_server *s); /* the listening socket */

/* 0 for a request to serve; 400 (malformed), 413 (body too large) or 431
 * (headers too large) for one that could not be read: reply with that
 * status; the connection closes after the reply. */
int h1_req_error(const h1_req *r);
h1_method h1_req_method(const h1_req *r);
const char *h1_req_target(const h1_req *r); /* as sent: path and query */
/* The client's address (AF_INET or AF_INET6; AF_UNSPEC if unknown). */
const struct sockaddr *h1_req_peer(const h1_req *r);
int h1_req_header_count(const h1_req *r);
/* Header i's name and value, NUL-terminated, as sent (value trimmed). */
void h1_req_header(const h1_req *r, int i, const char **name, const char **value);
/* The body (decoded when sent chunked), NUL-terminated, and its length. */
const char *h1_req_body(const h1_req *r, size_t *len);

/* A response header, before the reply starts. The name and value must be
 * header-safe (no CR or LF); lines is one or more "name: value\r\n". */
void h1_add_header(h1_req *r, const char *name, const char *value);
void h1_add_header_lines(h1_req *r, const char *lines, size_t len);
/* The whole reply: status, Content-Type, the headers added, the body. */
void h1_reply(h1_req *r, int status, const char *content_type, const char *body, size_t len);
/* A streamed reply (chunked; to an HTTP/1.0 client: raw, then close). */
void h1_reply_start(h1_req *r, int status, const char *content_type);
void h1_reply_chunk(h1_req *r, const char *data, size_t len);
void h1_reply_end(h1_req *r);

/* fn(arg) runs once if the client's connection closes before the reply
 * is complete; from then on replies are no-ops and the request is the
 * caller's to h1_req_release (not from inside fn). NULL fn: stop. */
void h1_watch_gone(h1_req *r, void (*fn)(void *arg), void *arg);
void h1_req_release(h1_req *r);

/* Request framing, for the fuzzer and the tests: how much of buf[0..len)
 * the first request takes. Returns H1_FRAME_MORE (incomplete), or
 * H1_FRAME_DONE with *consumed and the body's place in buf (a chunked body
 * is decoded in place), or an HTTP status (400, 413, 431). */
#define H1_FRAME_MORE 0
#define H1_FRAME_DONE 1
typedef struct h1_frame {
    size_t head_len;   /* request line and headers, with the blank line */
    size_t body_off;   /* where the body starts in buf */
    size_t body_len;   /* its length (decoded) */
    size_t consumed;   /* the whole request as sent */
    bool chunked;      /* Transfer-Encoding: chunked */
    bool keep_alive;   /* the connection may serve another request */
    bool expect_100;   /* Expect: 100-continue with the body not all here */
    int minor_version; /* HTTP/1.x */
} h1_frame;
/* Where framing an incomplete request stopped, so that more bytes do not
 * make it start over (a request trickling in a byte at a time costs its
 * length, not its length squared; a malformed head may then be refused
 * only once twice its bytes are in). Zeroed for each new request; NULL
 * frames from scratch. */
typedef struct h1_frame_state {
    size_t last_len;               /* the head was incomplete at this length */
    size_t full_len;               /* ... at its last full parse */
    size_t need;                   /* a Content-Length body: whole at this length */
    size_t chunk_pos, chunk_total; /* a chunked body: scanned this far */
} h1_frame_state;
int h1_frame_request(char *buf, size_t len, const h1_options *o, h1_frame_state *st, h1_frame *f);

#endif

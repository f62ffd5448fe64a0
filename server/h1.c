#include "server/h1.h"

#include <errno.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <event2/listener.h>
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
#include "lib/picohttpparser.h"
#include "lib/util.h"

/* Header lines one request may have at most, whatever the limits say: the
 * parser's array. The configured limits are checked by the app. */
#define HEADERS_MAX 256
/* The request line and headers may reach this much before error 431:
 * above the configured limit, so that the app's own 431 names it. */
#define HEAD_HARD_MIN (64 * 1024)
#define READ_SIZE (64 * 1024)
/* A connection keeps its buffers for the next request up to this size; a
 * larger one (a long prompt, a long answer) is given back, so thousands of
 * idle keep-alive connections do not each hold their largest request. */
#define KEEP_BUF_MAX (64 * 1024)
/* After an error reply the client's remaining bytes are read and dropped
 * this long at most, so that closing does not reset the connection before
 * the client has read the reply (nginx's lingering close). */
#define LINGER_MS 2000

/* ------------------------------------------------------------ framing */

static size_t head_hard_limit(const h1_options *o)
{
    size_t n = o->max_header_bytes * 4;
    return n > HEAD_HARD_MIN ? n : HEAD_HARD_MIN;
}

static bool name_is(const struct phr_header *h, const char *want, size_t n)
{
    return h->name_len == n && strncasecmp(h->name, want, n) == 0;
}

/* Whether the comma-separated list v[0..n) holds token (any case). */
static bool list_has(const char *v, size_t n, const char *token)
{
    size_t t = strlen(token);
    for (size_t i = 0; i < n;) {
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t start = i;
        while (i < n && v[i] != ',')
            i++;
        size_t end = i;
        while (end > start && (v[end - 1] == ' ' || v[end - 1] == '\t'))
            end--;
        if (end - start == t && strncasecmp(v + start, token, t) == 0) return true;
    }
    return false;
}

/* Content-Length: digits only, no sign, no list; -1 if malformed. */
static int64_t parse_length(const char *v, size_t n)
{
    if (n == 0 || n > 18) return -1;
    int64_t x = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9') return -1;
        x = x * 10 + (v[i] - '0');
    }
    return x;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* A chunked body at data[0..len): H1_FRAME_MORE, H1_FRAME_DONE with its
 * encoded length in *used and the data length in *total (and, when out is
 * not NULL, the data copied to out, which may be data: it only moves
 * left), or 400 / 413. Chunk extensions and trailers are skipped. The scan
 * starts at *pos with *total bytes decoded before it, and leaves both at
 * the last whole chunk, so a body arriving in pieces is scanned once. */
static int scan_chunked(char *data, size_t len, size_t max, size_t *pos, size_t *total,
                        size_t *used, char *out)
{
    size_t i = *pos, sum = *total;
    for (;;) {
        size_t size = 0, digits = 0;
        int d;
        while (i < len && (d = hexval(data[i])) >= 0) {
            if (++digits > 15) return 400;
            size = size * 16 + (size_t)d;
            i++;
        }
        if (i == len) return H1_FRAME_MORE;
        if (digits == 0) return 400;
        while (i < len && data[i] != '\n') /* extensions, then CRLF */
            i++;
        if (i == len) return H1_FRAME_MORE;
        i++;
        if (size == 0) break;
        if (size > max - sum) return 413;
        if (len - i < size + 2) return H1_FRAME_MORE;
        if (out) memmove(out + sum, data + i, size);
        sum += size;
        i += size;
        if (data[i] == '\r') i++;
        if (data[i] != '\n') return 400;
        i++;
        *pos = i;
        *total = sum;
    }
    for (;;) { /* trailer lines, then the empty line */
        size_t start = i;
        while (i < len && data[i] != '\n')
            i++;
        if (i == len) return H1_FRAME_MORE;
        i++;
        if (i - start == 1 || (i - start == 2 && data[start] == '\r')) break;
    }
    *used = i;
    *total = sum;
    return H1_FRAME_DONE;
}

typedef struct parsed_head {
    const char *method, *path;
    size_t method_len, path_len, num_headers;
    struct phr_header headers[HEADERS_MAX];
} parsed_head;

/* The request line and headers. While they are incomplete, picohttpparser
 * is told how much it saw before (it then only looks for the blank line in
 * the new bytes); a full parse, which finds a malformed line before the
 * blank line comes, runs again each time the bytes have doubled: a head
 * trickling in costs its length, and garbage is refused within twice its
 * length. */
static int frame_head(const char *data, size_t len, h1_frame_state *st, const h1_options *o,
                      h1_frame *f, parsed_head *p)
{
    bool full = st->last_len == 0 || len >= 2 * st->full_len;
    p->num_headers = HEADERS_MAX;
    int n =
        phr_parse_request(data, len, &p->method, &p->method_len, &p->path, &p->path_len,
                          &f->minor_version, p->headers, &p->num_headers, full ? 0 : st->last_len);
    if (n == -2) {
        st->last_len = len;
        if (full) st->full_len = len;
        return len > head_hard_limit(o) ? 431 : H1_FRAME_MORE;
    }
    if (n < 0) return p->num_headers == HEADERS_MAX ? 431 : 400;
    if ((size_t)n > head_hard_limit(o)) return 431;
    f->head_len = (size_t)n;
    return H1_FRAME_DONE;
}

/* The headers that frame the message: length or chunked, keep-alive,
 * 100-continue. Returns H1_FRAME_DONE or 400. */
static int frame_headers(const parsed_head *p, h1_frame *f, int64_t *length)
{
    bool has_te = false, close = false, keep = false, expect = false;
    *length = -1;
    for (size_t i = 0; i < p->num_headers; i++) {
        const struct phr_header *h = &p->headers[i];
        if (!h->name) return 400; /* obsolete line folding */
        if (name_is(h, "content-length", 14)) {
            int64_t v = parse_length(h->value, h->value_len);
            if (v < 0 || (*length >= 0 && v != *length)) return 400;
            *length = v;
        } else if (name_is(h, "transfer-encoding", 17)) {
            /* only "chunked", once: anything else is a smuggling risk */
            if (has_te || h->value_len != 7 || strncasecmp(h->value, "chunked", 7) != 0) return 400;
            has_te = true;
        } else if (name_is(h, "connection", 10)) {
            close |= list_has(h->value, h->value_len, "close");
            keep |= list_has(h->value, h->value_len, "keep-alive");
        } else if (name_is(h, "expect", 6)) {
            if (h->value_len != 12 || strncasecmp(h->value, "100-continue", 12) != 0) return 400;
            expect = true;
        }
    }
    if (has_te && *length >= 0) return 400; /* both: refused (RFC 9112 §6.3) */
    f->keep_alive = f->minor_version >= 1 ? !close : keep && !close;
    f->chunked = has_te;
    f->expect_100 = expect && f->minor_version >= 1; /* cleared once the body is here */
    return H1_FRAME_DONE;
}

/* Uploads (the Files API) may be larger than any other body. */
static size_t body_limit(const h1_options *o, const parsed_head *p)
{
    size_t n = o->upload_prefix ? strlen(o->upload_prefix) : 0;
    if (n && p->path_len >= n && memcmp(p->path, o->upload_prefix, n) == 0 &&
        o->max_upload_bytes > o->max_body_bytes)
        return o->max_upload_bytes;
    return o->max_body_bytes;
}

static int frame_request(char *data, size_t len, const h1_options *o, h1_frame *f, parsed_head *p,
                         h1_frame_state *st)
{
    memset(f, 0, sizeof *f);
    if (st->need && len < st->need) return H1_FRAME_MORE;
    int64_t length;
    int rc = frame_head(data, len, st, o, f, p);
    if (rc == H1_FRAME_DONE) rc = frame_headers(p, f, &length);
    if (rc != H1_FRAME_DONE) return rc;
    f->body_off = f->head_len;
    char *body = data + f->head_len;
    size_t limit = body_limit(o, p);
    if (f->chunked) {
        size_t used = 0, pos = 0, total = 0;
        rc = scan_chunked(body, len - f->head_len, limit, &st->chunk_pos, &st->chunk_total, &used,
                          NULL);
        if (rc != H1_FRAME_DONE) return rc;
        scan_chunked(body, used, limit, &pos, &total, &used, body);
        f->body_len = total;
        f->consumed = f->head_len + used;
    } else {
        if (length < 0) length = 0;
        if ((uint64_t)length > limit) return 413;
        if (len - f->head_len < (size_t)length) {
            st->need = f->head_len + (size_t)length;
            return H1_FRAME_MORE;
        }
        f->body_len = (size_t)length;
        f->consumed = f->head_len + (size_t)length;
    }
    f->expect_100 = false;
    return H1_FRAME_DONE;
}

int h1_frame_request(char *data, size_t len, const h1_options *o, h1_frame_state *st, h1_frame *f)
{
    static parsed_head p; /* one thread; 8 KiB is too much for a callback's stack */
    h1_frame_state fresh = {0};
    return frame_request(data, len, o, f, &p, st ? st : &fresh);
}

/* ------------------------------------------------------------ types */

typedef struct conn conn;

typedef struct header_ref {
    const char *name, *value;
} header_ref;

struct h1_req {
    conn *c;
    int error;
    h1_method method;
    int minor;
    const char *target;
    header_ref *headers;
    int n_headers, headers_cap;
    char *body;
    size_t body_len;
    buf head; /* response header lines added */
    void (*on_gone)(void *);
    void *gone_arg;
};

struct conn {
    h1_server *s;
    evutil_socket_t fd;
    struct sockaddr_storage peer; /* the client's address, as accepted */
    struct event rd, wr, deadline;
    struct event done; /* the reply is out: the request ends on the loop */
    bool wr_pending;
    buf in;            /* bytes received, not yet a request; always one byte spare */
    h1_frame_state fs; /* how far framing got in c->in */
    buf held;          /* the bytes of the request being served */
    buf out;           /* bytes to send */
    size_t out_off;
    bool busy;       /* the handler has the request */
    bool reply_done; /* the reply is whole (in out or sent) */
    bool close_after;
    bool chunked_out;
    bool sent_100;
    bool lingering;  /* an error reply went out: the rest is read and dropped */
    bool in_process; /* conn_process is on the stack: it finishes requests and frees */
    bool free_me;
    bool told; /* the handler heard its client left: h1_req_release frees */
    h1_req req;
    conn *prev, *next;
};

struct h1_server {
    struct event_base *base;
    struct evconnlistener *listener;
    h1_options o;
    h1_handler on_request;
    void *arg;
    bool stopped, paused;
    int64_t open;
    conn *conns;
    char *scratch;
    parsed_head head;
};

/* ------------------------------------------------------------ connections */

static void conn_process(conn *c);

static void conn_free(conn *c)
{
    if (c->in_process) {
        c->free_me = true;
        return;
    }
    event_del(&c->done);
    h1_server *s = c->s;
    if (c->prev)
        c->prev->next = c->next;
    else if (s && s->conns == c)
        s->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    buf_free(&c->in);
    buf_free(&c->held);
    buf_free(&c->out);
    buf_free(&c->req.head);
    free(c->req.headers);
    free(c);
}

static void maybe_resume_accept(h1_server *s)
{
    if (s->paused && !s->stopped && s->open < s->o.max_connections) {
        evconnlistener_enable(s->listener);
        s->paused = false;
    }
}

/* Closes the socket. The connection's memory goes at once when no request
 * is being served; else the handler is told (h1_watch_gone) and the memory
 * goes when it is done (its reply, or h1_req_release). */
static void conn_close(conn *c)
{
    if (c->fd < 0) return;
    event_del(&c->rd);
    event_del(&c->wr);
    event_del(&c->deadline);
    close(c->fd);
    c->fd = -1;
    c->s->open--;
    maybe_resume_accept(c->s);
    if (!c->busy) {
        conn_free(c);
        return;
    }
    void (*fn)(void *) = c->req.on_gone;
    c->req.on_gone = NULL;
    c->told = fn != NULL;
    if (fn) fn(c->req.gone_arg);
}

/* A reply call on a connection already closed: the request is over; its
 * memory goes now unless the handler was told (then h1_req_release). */
static void reply_on_closed(conn *c)
{
    if (c->fd < 0 && c->busy && !c->told) conn_free(c);
}

static void arm_deadline(conn *c, int64_t ms)
{
    struct timeval tv = util_ms_timeval(ms);
    evtimer_add(&c->deadline, &tv);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    conn *c = arg;
    if (!c->busy) conn_close(c); /* no whole request in time, idle too long, or lingered */
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
    conn *c = arg;
    h1_server *s = c->s;
    ssize_t n = read(c->fd, s->scratch, READ_SIZE);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (n <= 0) {
        conn_close(c);
        return;
    }
    if (c->lingering) return;
    buf_append(&c->in, s->scratch, (size_t)n);
    buf_reserve(&c->in, 1);
    /* a client sending more than a whole request while one is served waits:
     * it is read again once that request is answered */
    if (c->busy && c->in.len > head_hard_limit(&s->o) + s->o.max_body_bytes +
                                   (s->o.upload_prefix ? s->o.max_upload_bytes : 0))
        event_del(&c->rd);
    if (!c->busy) conn_process(c);
}

/* The reply is out: the next request may come. Returns false when the
 * connection is closed (or lingers after an error reply). */
static bool finish_request(conn *c)
{
    c->busy = false;
    c->reply_done = false;
    c->chunked_out = false;
    c->sent_100 = false;
    c->req.on_gone = NULL;
    buf_reset(&c->req.head);
    buf *bufs[] = {&c->held, &c->out, &c->req.head};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (bufs[i]->cap > KEEP_BUF_MAX) buf_free(bufs[i]);
    if (c->fd < 0) {
        if (!c->told) conn_free(c); /* else the handler releases it */
        return false;
    }
    if (c->close_after) {
        if (!c->req.error) {
            conn_close(c);
            return false;
        }
        shutdown(c->fd, SHUT_WR); /* the client reads the error, then we close */
        c->lingering = true;
        arm_deadline(c, LINGER_MS);
        return false;
    }
    if (!event_pending(&c->rd, EV_READ, NULL)) event_add(&c->rd, NULL);
    arm_deadline(c, c->s->o.read_timeout_ms);
    return true;
}

/* Sends what out holds. Returns true when all of it went. */
static bool conn_send(conn *c)
{
    while (c->fd >= 0 && c->out_off < c->out.len) {
        ssize_t n = write(c->fd, c->out.data + c->out_off, c->out.len - c->out_off);
        if (n > 0) {
            c->out_off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) {
            if (!c->wr_pending) event_add(&c->wr, NULL);
            c->wr_pending = true;
            return false;
        }
        /* the client is gone: the read side reports it from the loop, not
         * from inside the handler's reply call */
        shutdown(c->fd, SHUT_RDWR);
        break;
    }
    buf_reset(&c->out);
    c->out_off = 0;
    return true;
}

static bool reply_sent(const conn *c)
{
    return c->busy && c->reply_done && c->out.len == 0;
}

/* Sends. A reply whole and sent ends its request on the next loop step,
 * not inside the reply call: until the caller returns, the request stays
 * as it was (as with evhttp, which wrote from the loop). */
static void conn_flush(conn *c)
{
    if (conn_send(c) && reply_sent(c) && !c->in_process) event_active(&c->done, EV_TIMEOUT, 1);
}

static void on_done(evutil_socket_t fd, short what, void *arg)
{
    conn *c = arg;
    if (reply_sent(c) && finish_request(c)) conn_process(c);
}

static void on_write(evutil_socket_t fd, short what, void *arg)
{
    conn *c = arg;
    c->wr_pending = false;
    if (conn_send(c) && reply_sent(c) && finish_request(c)) conn_process(c);
}

static h1_method method_of(const char *m, size_t n)
{
    static const struct {
        const char *name;
        h1_method m;
    } names[] = {{"GET", H1_GET},       {"POST", H1_POST}, {"PUT", H1_PUT},
                 {"DELETE", H1_DELETE}, {"HEAD", H1_HEAD}, {"OPTIONS", H1_OPTIONS}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strlen(names[i].name) == n && memcmp(names[i].name, m, n) == 0) return names[i].m;
    return H1_OTHER;
}

static void clear_request(conn *c, int error, bool keep_alive)
{
    h1_req *r = &c->req;
    r->error = error;
    r->minor = 1;
    r->method = H1_OTHER;
    r->target = "";
    r->n_headers = 0;
    r->body = (char *)"";
    r->body_len = 0;
    r->on_gone = NULL;
    c->close_after = error || !keep_alive;
}

/* The request at the start of c->in (framed in s->head) becomes c->held,
 * whose memory does not move while it is served; what follows it
 * (pipelined) stays in c->in. Names, values and the target are
 * NUL-terminated in place. */
static bool take_request(conn *c, const h1_frame *f)
{
    const parsed_head *p = &c->s->head;
    h1_req *r = &c->req;
    if ((int)p->num_headers > r->headers_cap) {
        header_ref *h = realloc(r->headers, p->num_headers * sizeof *h);
        if (!h) return false;
        r->headers = h;
        r->headers_cap = (int)p->num_headers;
    }
    buf t = c->held; /* a swap of the buffers, not of their bytes */
    c->held = c->in;
    c->in = t;
    buf_reset(&c->in);
    buf_append(&c->in, c->held.data + f->consumed, c->held.len - f->consumed);
    buf_reserve(&c->in, 1);
    clear_request(c, 0, f->keep_alive);
    r->minor = f->minor_version;
    r->method = method_of(p->method, p->method_len);
    r->target = p->path;
    ((char *)p->path)[p->path_len] = '\0'; /* the space before HTTP/1.x */
    for (size_t i = 0; i < p->num_headers; i++) {
        ((char *)p->headers[i].name)[p->headers[i].name_len] = '\0';   /* the colon */
        ((char *)p->headers[i].value)[p->headers[i].value_len] = '\0'; /* CR, LF or a space */
        r->headers[i].name = p->headers[i].name;
        r->headers[i].value = p->headers[i].value;
    }
    r->n_headers = (int)p->num_headers;
    r->body = c->held.data + f->body_off;
    r->body_len = f->body_len;
    r->body[r->body_len] = '\0'; /* c->in kept a byte spare */
    return true;
}

/* Serves the requests c->in holds, one after the other while each is
 * answered at once; stops at one answered later or at an incomplete one. */
static void conn_process(conn *c)
{
    if (c->in_process) return;
    c->in_process = true;
    h1_server *s = c->s;
    while (c->fd >= 0 && !c->busy && !c->lingering && c->in.len > 0) {
        h1_frame f;
        int rc = frame_request(c->in.data, c->in.len, &s->o, &f, &s->head, &c->fs);
        if (rc == H1_FRAME_MORE) {
            if (f.expect_100 && !c->sent_100) {
                c->sent_100 = true;
                buf_append(&c->out, "HTTP/1.1 100 Continue\r\n\r\n", 25);
                conn_send(c);
            }
            break;
        }
        memset(&c->fs, 0, sizeof c->fs); /* the next request starts afresh */
        if (rc != H1_FRAME_DONE || !take_request(c, &f)) {
            clear_request(c, rc != H1_FRAME_DONE ? rc : 400, false);
            buf_reset(&c->in);
        }
        c->busy = true;
        c->reply_done = false;
        event_del(&c->deadline);
        s->on_request(&c->req, s->arg);
        /* answered at once and sent: on to the next one */
        if (reply_sent(c) && !finish_request(c)) break;
    }
    c->in_process = false;
    if (c->free_me) conn_free(c);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int sl,
                      void *arg)
{
    h1_server *s = arg;
    conn *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        return;
    }
    /* Streams are written a chunk at a time: without TCP_NODELAY, Nagle and
     * the client's delayed ACK hold chunks back by up to 40 ms. */
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->s = s;
    c->fd = fd;
    if (sa && sl > 0 && (size_t)sl <= sizeof c->peer) memcpy(&c->peer, sa, (size_t)sl);
    c->req.c = c;
    c->next = s->conns;
    if (s->conns) s->conns->prev = c;
    s->conns = c;
    event_assign(&c->rd, s->base, fd, EV_READ | EV_PERSIST, on_read, c);
    event_assign(&c->wr, s->base, fd, EV_WRITE, on_write, c);
    evtimer_assign(&c->deadline, s->base, on_deadline, c);
    event_assign(&c->done, s->base, -1, 0, on_done, c);
    event_add(&c->rd, NULL);
    arm_deadline(c, s->o.read_timeout_ms);
    s->open++;
    if (s->open >= s->o.max_connections && !s->paused) {
        log_warn("%lld client connections open (limits.max_connections): pausing accept",
                 (long long)s->open);
        evconnlistener_disable(s->listener);
        s->paused = true;
    }
}

/* ------------------------------------------------------------ server */

h1_server *h1_server_new(struct event_base *base, evutil_socket_t fd, const h1_options *o,
                         h1_handler on_request, void *arg)
{
    h1_server *s = calloc(1, sizeof *s);
    if (!s || !(s->scratch = malloc(READ_SIZE))) {
        free(s);
        return NULL;
    }
    s->base = base;
    s->o = *o;
    s->on_request = on_request;
    s->arg = arg;
    /* backlog 0: the socket listens already; accepted sockets are
     * non-blocking and close on exec */
    s->listener = evconnlistener_new(base, on_accept, s,
                                     LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0, fd);
    if (!s->listener) {
        free(s->scratch);
        free(s);
        return NULL;
    }
    return s;
}

void h1_server_stop_accepting(h1_server *s)
{
    if (!s->stopped && !s->paused) evconnlistener_disable(s->listener);
    s->stopped = true;
}

void h1_server_free(h1_server *s)
{
    if (!s) return;
    while (s->conns) {
        conn *c = s->conns;
        s->conns = c->next;
        c->prev = c->next = NULL;
        c->s = NULL;
        c->in_process = false;
        if (c->fd >= 0) {
            event_del(&c->rd);
            event_del(&c->wr);
            event_del(&c->deadline);
            close(c->fd);
            c->fd = -1;
        }
        if (!c->told) conn_free(c); /* a told handler still holds its request */
    }
    evconnlistener_free(s->listener);
    free(s->scratch);
    free(s);
}

evutil_socket_t h1_server_fd(const h1_server *s)
{
    return evconnlistener_get_fd(s->listener);
}

/* ------------------------------------------------------------ requests */

int h1_req_error(const h1_req *r)
{
    return r->error;
}

h1_method h1_req_method(const h1_req *r)
{
    return r->method;
}

const struct sockaddr *h1_req_peer(const h1_req *r)
{
    return (const struct sockaddr *)&r->c->peer;
}

const char *h1_req_target(const h1_req *r)
{
    return r->target;
}

int h1_req_header_count(const h1_req *r)
{
    return r->n_headers;
}

void h1_req_header(const h1_req *r, int i, const char **name, const char **value)
{
    *name = r->headers[i].name;
    *value = r->headers[i].value;
}

const char *h1_req_body(const h1_req *r, size_t *len)
{
    *len = r->body_len;
    return r->body;
}

void h1_watch_gone(h1_req *r, void (*fn)(void *), void *arg)
{
    r->on_gone = fn;
    r->gone_arg = arg;
}

void h1_req_release(h1_req *r)
{
    conn *c = r->c;
    if (c->fd < 0 && c->told) conn_free(c);
}

/* ------------------------------------------------------------ replies */

void h1_add_header(h1_req *r, const char *name, const char *value)
{
    buf_append_str(&r->head, name);
    buf_append(&r->head, ": ", 2);
    buf_append_str(&r->head, value);
    buf_append(&r->head, "\r\n", 2);
}

void h1_add_header_lines(h1_req *r, const char *lines, size_t len)
{
    buf_append(&r->head, lines, len);
}

/* The Date header's text changes once a second: made once a second. */
static const char *http_date(void)
{
    static time_t last = -1;
    static char date[40];
    time_t now = time(NULL);
    if (now != last) {
        struct tm tm;
        gmtime_r(&now, &tm);
        evutil_date_rfc1123(date, sizeof date, &tm);
        last = now;
    }
    return date;
}

static const char *reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
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
    case 529:
        return "Overloaded";
    default:
        return status < 400 ? "OK" : "Error";
    }
}

static void put_status_line(conn *c, int status, const char *content_type)
{
    buf *o = &c->out;
    buf_append(o, "HTTP/1.1 ", 9);
    buf_append_u64(o, (uint64_t)status);
    buf_append_char(o, ' ');
    buf_append_str(o, reason(status));
    buf_append(o, "\r\nDate: ", 8);
    buf_append_str(o, http_date());
    buf_append(o, "\r\nContent-Type: ", 16);
    buf_append_str(o, content_type);
    buf_append(o, "\r\n", 2);
    buf_append(o, c->req.head.data, c->req.head.len);
    if (c->s->o.extra_head[0]) buf_append_str(o, c->s->o.extra_head);
    if (c->close_after)
        buf_append(o, "Connection: close\r\n", 19);
    else if (c->req.minor == 0)
        buf_append(o, "Connection: keep-alive\r\n", 24);
}

static bool can_reply(const h1_req *r)
{
    return r->c->fd >= 0 && r->c->busy && !r->c->reply_done;
}

void h1_reply(h1_req *r, int status, const char *content_type, const char *body, size_t len)
{
    conn *c = r->c;
    if (!can_reply(r)) {
        reply_on_closed(c);
        return;
    }
    put_status_line(c, status, content_type);
    buf_append(&c->out, "Content-Length: ", 16);
    buf_append_u64(&c->out, len);
    buf_append(&c->out, "\r\n\r\n", 4);
    if (r->method != H1_HEAD) buf_append(&c->out, body, len);
    c->reply_done = true;
    conn_flush(c);
}

void h1_reply_start(h1_req *r, int status, const char *content_type)
{
    conn *c = r->c;
    if (!can_reply(r)) return;
    /* HTTP/1.0 has no chunks: the body ends with the connection */
    c->chunked_out = r->minor >= 1;
    if (!c->chunked_out) c->close_after = true;
    put_status_line(c, status, content_type);
    if (c->chunked_out) buf_append(&c->out, "Transfer-Encoding: chunked\r\n", 28);
    buf_append(&c->out, "\r\n", 2);
    conn_flush(c);
}

void h1_reply_chunk(h1_req *r, const char *data, size_t len)
{
    conn *c = r->c;
    if (!can_reply(r) || len == 0 || r->method == H1_HEAD) return;
    if (c->chunked_out) {
        char hex[20];
        int n = snprintf(hex, sizeof hex, "%zx\r\n", len);
        buf_append(&c->out, hex, (size_t)n);
    }
    buf_append(&c->out, data, len);
    if (c->chunked_out) buf_append(&c->out, "\r\n", 2);
    if (!c->wr_pending) conn_flush(c); /* else the pending write takes it too */
}

void h1_reply_end(h1_req *r)
{
    conn *c = r->c;
    if (!can_reply(r)) {
        reply_on_closed(c);
        return;
    }
    if (c->chunked_out && r->method != H1_HEAD) buf_append(&c->out, "0\r\n\r\n", 5);
    c->reply_done = true;
    conn_flush(c);
}

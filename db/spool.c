/* db/spool — see spool.h for the format, the durability contract and what
 * the loop and the sync thread share. */
#include "db/spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <msgpack.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lib/log.h"

#define FORMAT_VERSION 1
#define N_ELEMS 32 /* version, seq, 30 event fields */
#define DEFAULT_SEGMENT (8ull << 20)
#define DEFAULT_CAP (1ull << 30)
#define SEG_NAME_LEN 24 /* "seg-" + 16 digits + ".log" */
#define CKPT_NAME "acked"
#define CKPT_TMP "acked.tmp"

/* ================================================================ CRC-32C */

static uint32_t crc_tab[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_tab[0][i] = c;
    }
    for (int i = 0; i < 256; i++)
        for (int k = 1; k < 8; k++)
            crc_tab[k][i] = (crc_tab[k - 1][i] >> 8) ^ crc_tab[0][crc_tab[k - 1][i] & 0xff];
}

uint32_t spool_crc32c(uint32_t crc, const void *data, size_t len)
{
    pthread_once(&crc_once, crc_init);
    const uint8_t *p = data;
    crc = ~crc;
    /* Slicing-by-8: eight bytes per step, byte order explicit (not host). */
    while (len >= 8) {
        uint32_t lo = crc ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                             (uint32_t)p[3] << 24);
        uint32_t hi =
            (uint32_t)p[4] | (uint32_t)p[5] << 8 | (uint32_t)p[6] << 16 | (uint32_t)p[7] << 24;
        crc = crc_tab[7][lo & 0xff] ^ crc_tab[6][(lo >> 8) & 0xff] ^ crc_tab[5][(lo >> 16) & 0xff] ^
              crc_tab[4][lo >> 24] ^ crc_tab[3][hi & 0xff] ^ crc_tab[2][(hi >> 8) & 0xff] ^
              crc_tab[1][(hi >> 16) & 0xff] ^ crc_tab[0][hi >> 24];
        p += 8;
        len -= 8;
    }
    while (len--)
        crc = crc_tab[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

/* ================================================================ encode */

typedef struct fixbuf {
    uint8_t *p;
    size_t len, cap;
} fixbuf;

static int fixbuf_write(void *data, const char *buf, size_t len)
{
    fixbuf *b = data;
    if (len > b->cap - b->len) return -1;
    memcpy(b->p + b->len, buf, len);
    b->len += len;
    return 0;
}

static int pack_str(msgpack_packer *pk, const char *s, size_t field_size)
{
    size_t n = strnlen(s, field_size - 1);
    if (msgpack_pack_str(pk, n) != 0) return -1;
    return msgpack_pack_str_body(pk, s, n);
}

static int pack_bool(msgpack_packer *pk, bool v)
{
    return v ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
}

static void put_le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static uint32_t get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

#define STR(f) pack_str(&pk, ev->f, sizeof ev->f)

size_t spool_encode_record(const usage_event *ev, uint64_t seq, uint8_t *out, size_t cap)
{
    if (cap < SPOOL_HEADER_LEN) return 0;
    fixbuf b = {out + SPOOL_HEADER_LEN, 0, cap - SPOOL_HEADER_LEN};
    msgpack_packer pk;
    msgpack_packer_init(&pk, &b, fixbuf_write);
    /* The order is the format: append new fields at the end only. */
    int bad =
        msgpack_pack_array(&pk, N_ELEMS) | msgpack_pack_uint8(&pk, FORMAT_VERSION) |
        msgpack_pack_uint64(&pk, seq) | STR(event_id) | msgpack_pack_int64(&pk, ev->ts_us) |
        STR(key_id) | STR(team) | STR(end_user) | STR(agent) | STR(task) | STR(feature) |
        STR(requested_model) | STR(provider) | STR(model) | STR(tier) | STR(route_reason) |
        pack_bool(&pk, ev->streamed) | msgpack_pack_int32(&pk, ev->status) | STR(error_class) |
        msgpack_pack_int32(&pk, ev->attempts) | msgpack_pack_int64(&pk, ev->input_tokens) |
        msgpack_pack_int64(&pk, ev->cache_read_tokens) |
        msgpack_pack_int64(&pk, ev->cache_write_tokens) |
        msgpack_pack_int64(&pk, ev->output_tokens) | msgpack_pack_int64(&pk, ev->reasoning_tokens) |
        pack_bool(&pk, ev->usage_exact) | msgpack_pack_int64(&pk, ev->cost_pusd) |
        msgpack_pack_int64(&pk, ev->baseline_cost_pusd) | msgpack_pack_int64(&pk, ev->latency_us) |
        msgpack_pack_int64(&pk, ev->ttft_us) | msgpack_pack_int64(&pk, ev->upstream_us) |
        pack_bool(&pk, ev->cache_hit) | STR(batch_id);
    if (bad || b.len > SPOOL_MAX_PAYLOAD) return 0;
    memcpy(out, SPOOL_MAGIC, 4);
    put_le32(out + 4, (uint32_t)b.len);
    put_le32(out + 8, spool_crc32c(0, b.p, b.len));
    return SPOOL_HEADER_LEN + b.len;
}

#undef STR

/* ================================================================ decode
 * A strict reader of the msgpack subset the schema uses, written by hand
 * rather than msgpack_unpack: it allocates nothing (msgpack-c's unpacker
 * sizes a container from its declared count before seeing the elements,
 * which a damaged count turns into a huge allocation) and checks each field
 * against its struct slot as it goes. */

typedef struct rd {
    const uint8_t *p, *end;
} rd;

static int rd_take(rd *r, size_t n, const uint8_t **out)
{
    if ((size_t)(r->end - r->p) < n) return -1;
    *out = r->p;
    r->p += n;
    return 0;
}

static uint64_t be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

static int rd_int(rd *r, int64_t *out)
{
    const uint8_t *t;
    if (rd_take(r, 1, &t)) return -1;
    uint8_t b = t[0];
    if (b <= 0x7f) {
        *out = b;
        return 0;
    }
    if (b >= 0xe0) {
        *out = (int8_t)b;
        return 0;
    }
    int n;
    bool sgn;
    switch (b) {
    case 0xcc:
        n = 1, sgn = false;
        break;
    case 0xcd:
        n = 2, sgn = false;
        break;
    case 0xce:
        n = 4, sgn = false;
        break;
    case 0xcf:
        n = 8, sgn = false;
        break;
    case 0xd0:
        n = 1, sgn = true;
        break;
    case 0xd1:
        n = 2, sgn = true;
        break;
    case 0xd2:
        n = 4, sgn = true;
        break;
    case 0xd3:
        n = 8, sgn = true;
        break;
    default:
        return -1;
    }
    if (rd_take(r, (size_t)n, &t)) return -1;
    uint64_t v = be(t, n);
    if (!sgn) {
        if (v > INT64_MAX) return -1;
        *out = (int64_t)v;
    } else if (n == 8) {
        *out = (int64_t)v;
    } else {
        /* Sign-extend from n bytes. */
        uint64_t sign = 1ull << (n * 8 - 1);
        *out = (int64_t)(v ^ sign) - (int64_t)sign;
    }
    return 0;
}

static int rd_i32(rd *r, int32_t *out)
{
    int64_t v;
    if (rd_int(r, &v) || v < INT32_MIN || v > INT32_MAX) return -1;
    *out = (int32_t)v;
    return 0;
}

static int rd_bool(rd *r, bool *out)
{
    const uint8_t *t;
    if (rd_take(r, 1, &t) || (t[0] != 0xc2 && t[0] != 0xc3)) return -1;
    *out = t[0] == 0xc3;
    return 0;
}

/* A str into a char[dstsz] slot: must fit with its NUL, and hold no NUL. */
static int rd_str(rd *r, char *dst, size_t dstsz)
{
    const uint8_t *t;
    if (rd_take(r, 1, &t)) return -1;
    uint64_t n;
    if (t[0] >= 0xa0 && t[0] <= 0xbf) {
        n = t[0] & 0x1f;
    } else {
        int w = t[0] == 0xd9 ? 1 : t[0] == 0xda ? 2 : t[0] == 0xdb ? 4 : 0;
        if (!w || rd_take(r, (size_t)w, &t)) return -1;
        n = be(t, w);
    }
    if (n >= dstsz || rd_take(r, (size_t)n, &t) || memchr(t, 0, (size_t)n)) return -1;
    memcpy(dst, t, (size_t)n);
    dst[n] = '\0';
    return 0;
}

/* Skips one well-formed msgpack object (for elements a later version
 * appends). Depth-bounded; every element consumes at least one byte, so a
 * damaged count runs out of input instead of looping. */
static int rd_skip(rd *r, int depth)
{
    const uint8_t *t;
    if (depth > 8 || rd_take(r, 1, &t)) return -1;
    uint8_t b = t[0];
    uint64_t n = 0, elems = 0;
    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) return 0;
    if (b >= 0xa0 && b <= 0xbf) return rd_take(r, b & 0x1f, &t);
    if (b >= 0x90 && b <= 0x9f)
        elems = b & 0x0f;
    else if (b >= 0x80 && b <= 0x8f)
        elems = 2u * (b & 0x0f);
    else {
        int w;
        switch (b) {
        case 0xcc:
        case 0xd0:
            return rd_take(r, 1, &t);
        case 0xcd:
        case 0xd1:
            return rd_take(r, 2, &t);
        case 0xce:
        case 0xd2:
        case 0xca:
            return rd_take(r, 4, &t);
        case 0xcf:
        case 0xd3:
        case 0xcb:
            return rd_take(r, 8, &t);
        case 0xd4:
            return rd_take(r, 2, &t);
        case 0xd5:
            return rd_take(r, 3, &t);
        case 0xd6:
            return rd_take(r, 5, &t);
        case 0xd7:
            return rd_take(r, 9, &t);
        case 0xd8:
            return rd_take(r, 17, &t);
        case 0xc4:
        case 0xd9:
            w = 1;
            break;
        case 0xc5:
        case 0xda:
            w = 2;
            break;
        case 0xc6:
        case 0xdb:
            w = 4;
            break;
        case 0xc7:
            w = -1;
            break;
        case 0xc8:
            w = -2;
            break;
        case 0xc9:
            w = -4;
            break;
        case 0xdc:
        case 0xde:
            w = 2;
            break;
        case 0xdd:
        case 0xdf:
            w = 4;
            break;
        default:
            return -1; /* 0xc1 is never used */
        }
        bool ext = w < 0;
        if (ext) w = -w;
        if (rd_take(r, (size_t)w, &t)) return -1;
        n = be(t, w);
        if (b == 0xdc || b == 0xdd)
            elems = n;
        else if (b == 0xde || b == 0xdf)
            elems = 2 * n;
        else
            return rd_take(r, (size_t)n + (ext ? 1 : 0), &t);
    }
    if (elems > (uint64_t)(r->end - r->p)) return -1;
    for (uint64_t i = 0; i < elems; i++)
        if (rd_skip(r, depth + 1)) return -1;
    return 0;
}

#define RSTR(f) rd_str(&r, ev->f, sizeof ev->f)

int spool_decode_payload(const uint8_t *p, size_t len, usage_event *ev, uint64_t *seq)
{
    rd r = {p, p + len};
    const uint8_t *t;
    uint64_t count;
    if (rd_take(&r, 1, &t)) return -1;
    if (t[0] >= 0x90 && t[0] <= 0x9f) {
        count = t[0] & 0x0f;
    } else if (t[0] == 0xdc || t[0] == 0xdd) {
        int w = t[0] == 0xdc ? 2 : 4;
        if (rd_take(&r, (size_t)w, &t)) return -1;
        count = be(t, w);
    } else {
        return -1;
    }
    if (count < N_ELEMS || count > len) return -1;
    int64_t version, s;
    if (rd_int(&r, &version) || version < 1 || rd_int(&r, &s) || s < 1) return -1;
    memset(ev, 0, sizeof *ev);
    if (RSTR(event_id) || rd_int(&r, &ev->ts_us) || RSTR(key_id) || RSTR(team) || RSTR(end_user) ||
        RSTR(agent) || RSTR(task) || RSTR(feature) || RSTR(requested_model) || RSTR(provider) ||
        RSTR(model) || RSTR(tier) || RSTR(route_reason) || rd_bool(&r, &ev->streamed) ||
        rd_i32(&r, &ev->status) || RSTR(error_class) || rd_i32(&r, &ev->attempts) ||
        rd_int(&r, &ev->input_tokens) || rd_int(&r, &ev->cache_read_tokens) ||
        rd_int(&r, &ev->cache_write_tokens) || rd_int(&r, &ev->output_tokens) ||
        rd_int(&r, &ev->reasoning_tokens) || rd_bool(&r, &ev->usage_exact) ||
        rd_int(&r, &ev->cost_pusd) || rd_int(&r, &ev->baseline_cost_pusd) ||
        rd_int(&r, &ev->latency_us) || rd_int(&r, &ev->ttft_us) || rd_int(&r, &ev->upstream_us) ||
        rd_bool(&r, &ev->cache_hit) || RSTR(batch_id))
        return -1;
    for (uint64_t i = N_ELEMS; i < count; i++)
        if (rd_skip(&r, 1)) return -1;
    if (r.p != r.end) return -1;
    *seq = (uint64_t)s;
    return 0;
}

#undef RSTR

/* ================================================================ scan */

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i]) return false;
    return true;
}

int spool_scan_next(const uint8_t *buf, size_t len, size_t *pos, usage_event *ev, uint64_t *seq,
                    size_t *rec_off, size_t *rec_len, uint64_t *skipped)
{
    size_t p = *pos;
    bool damaged = false;
    while (p < len) {
        if (len - p >= SPOOL_HEADER_LEN && memcmp(buf + p, SPOOL_MAGIC, 4) == 0) {
            uint32_t plen = get_le32(buf + p + 4);
            if (plen >= SPOOL_MIN_PAYLOAD && plen <= SPOOL_MAX_PAYLOAD &&
                plen <= len - p - SPOOL_HEADER_LEN &&
                spool_crc32c(0, buf + p + SPOOL_HEADER_LEN, plen) == get_le32(buf + p + 8) &&
                spool_decode_payload(buf + p + SPOOL_HEADER_LEN, plen, ev, seq) == 0) {
                *rec_off = p;
                *rec_len = SPOOL_HEADER_LEN + plen;
                *pos = p + SPOOL_HEADER_LEN + plen;
                if (damaged && skipped) ++*skipped;
                return 1;
            }
        }
        /* Resynchronise at the next magic. A span of zeros (a preallocated
         * tail) is not damage. */
        const uint8_t *m = memmem(buf + p + 1, len - p - 1, SPOOL_MAGIC, 4);
        size_t next = m ? (size_t)(m - buf) : len;
        if (!all_zero(buf + p, next - p)) damaged = true;
        p = next;
    }
    *pos = len;
    if (damaged && skipped) ++*skipped;
    return 0;
}

/* ================================================================ the spool */

typedef struct seg {
    uint64_t base;  /* seq given to its first record; from the name */
    uint64_t bytes; /* counted towards the cap */
} seg;

typedef struct fdlist {
    int *v;
    size_t n, cap;
} fdlist;

typedef struct u64list {
    uint64_t *v;
    size_t n, cap;
} u64list;

struct spool {
    char *dir;
    int dir_fd, lock_fd, efd;
    spool_options o;

    /* Loop-only. */
    seg *segs; /* sorted by base; the last is the one appended to */
    size_t nsegs, capsegs;
    int cur_fd;
    uint64_t cur_off;
    bool cur_broken; /* a failed write left bytes we could not cut: rotate */
    uint64_t next_seq, acked, bytes, reported_durable, corrupt_skips;
    uint8_t *wbuf; /* spool_append_many's records, written in one pwrite */
    size_t wcap;

    /* Shared with the sync thread: every field below only under mu. */
    pthread_mutex_t mu;
    pthread_cond_t wake; /* the thread waits on it */
    pthread_cond_t done; /* spool_sync_now waits on it */
    pthread_t thr;
    bool thr_started, stop;
    uint64_t sh_appended, sh_durable, sh_sync_want;
    int sh_cur_fd;
    bool sh_dir_dirty;
    fdlist sh_retired; /* fds the thread owns: sync, then close */
    u64list sh_unlink; /* bases of segments to unlink */
    uint64_t sh_ack_want, sh_ack_written;
    int sh_sync_err;
    uint64_t sh_syncs, sh_sync_max_us;
};

static void seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen) return;
    int e = errno;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    errno = e;
}

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void seg_name(char out[SEG_NAME_LEN + 1], uint64_t base)
{
    snprintf(out, SEG_NAME_LEN + 1, "seg-%016llu.log", (unsigned long long)base);
}

static bool parse_seg_name(const char *name, uint64_t *base)
{
    if (strlen(name) != SEG_NAME_LEN || memcmp(name, "seg-", 4) != 0 ||
        memcmp(name + 20, ".log", 4) != 0)
        return false;
    uint64_t v = 0;
    for (int i = 4; i < 20; i++) {
        if (name[i] < '0' || name[i] > '9') return false;
        v = v * 10 + (uint64_t)(name[i] - '0');
    }
    *base = v;
    return true;
}

static int push_fd(fdlist *l, int fd)
{
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 8;
        int *nv = realloc(l->v, nc * sizeof *nv);
        if (!nv) return -1;
        l->v = nv, l->cap = nc;
    }
    l->v[l->n++] = fd;
    return 0;
}

static int push_u64(u64list *l, uint64_t x)
{
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 8;
        uint64_t *nv = realloc(l->v, nc * sizeof *nv);
        if (!nv) return -1;
        l->v = nv, l->cap = nc;
    }
    l->v[l->n++] = x;
    return 0;
}

static int push_seg(spool *sp, uint64_t base, uint64_t bytes)
{
    if (sp->nsegs == sp->capsegs) {
        size_t nc = sp->capsegs ? sp->capsegs * 2 : 16;
        seg *nv = realloc(sp->segs, nc * sizeof *nv);
        if (!nv) return -1;
        sp->segs = nv, sp->capsegs = nc;
    }
    sp->segs[sp->nsegs++] = (seg){base, bytes};
    return 0;
}

static int write_full(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len) {
        ssize_t w = write(fd, p, len);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

/* Reads a whole file (at most `limit` bytes) into a fresh buffer. */
static int read_file_at(int dir_fd, const char *name, uint64_t limit, uint8_t **out, size_t *len)
{
    int fd = openat(dir_fd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    size_t want = (uint64_t)st.st_size < limit ? (size_t)st.st_size : (size_t)limit;
    uint8_t *b = malloc(want ? want : 1);
    if (!b) {
        close(fd);
        errno = ENOMEM;
        return -1;
    }
    size_t got = 0;
    while (got < want) {
        ssize_t r = read(fd, b + got, want - got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            int e = errno;
            free(b);
            close(fd);
            errno = e;
            return -1;
        }
        if (r == 0) break;
        got += (size_t)r;
    }
    close(fd);
    *out = b;
    *len = got;
    return 0;
}

/* ---------------------------------------------------------------- checkpoint */

static int ckpt_format(char *out, size_t cap, uint64_t seq)
{
    char num[24];
    int n = snprintf(num, sizeof num, "%llu", (unsigned long long)seq);
    return snprintf(out, cap, "BRLACK1 %s %08x\n", num, spool_crc32c(0, num, (size_t)n));
}

/* The checkpoint, or 0 when there is none or it does not parse (then
 * everything is replayed: safe, inserts are idempotent). */
static uint64_t ckpt_read(int dir_fd)
{
    uint8_t *b;
    size_t n;
    if (read_file_at(dir_fd, CKPT_NAME, 64, &b, &n) != 0) return 0;
    char s[65];
    memcpy(s, b, n);
    s[n] = '\0';
    free(b);
    unsigned long long v;
    int used = 0;
    if (sscanf(s, "BRLACK1 %llu %*x\n%n", &v, &used) != 1 || used != (int)n) {
        log_warn("spool: checkpoint unreadable, replaying everything");
        return 0;
    }
    char again[64];
    ckpt_format(again, sizeof again, v);
    if (strcmp(again, s) != 0) {
        log_warn("spool: checkpoint fails its CRC, replaying everything");
        return 0;
    }
    return v;
}

/* tmp, fsync, rename, fsync dir: the checkpoint is old or new, never torn. */
static int ckpt_write(int dir_fd, uint64_t seq)
{
    char body[64];
    int n = ckpt_format(body, sizeof body, seq);
    int fd = openat(dir_fd, CKPT_TMP, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return -1;
    if (write_full(fd, body, (size_t)n) != 0 || fsync(fd) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    close(fd);
    if (renameat(dir_fd, CKPT_TMP, dir_fd, CKPT_NAME) != 0 || fsync(dir_fd) != 0) return -1;
    return 0;
}

/* ---------------------------------------------------------------- sync thread */

static void *sync_main(void *arg)
{
    spool *sp = arg;
    int64_t deadline = 0, ckpt_last = 0;
    /* At once: this loop is the group commit (what arrives during one
     * fdatasync is the next group). */
    const bool at_once = sp->o.sync_interval_ms == SPOOL_SYNC_AT_ONCE;
    const int64_t interval = at_once ? 0 : (int64_t)sp->o.sync_interval_ms * 1000000;
    const int64_t ckpt_gap = (int64_t)sp->o.checkpoint_interval_ms * 1000000;
    fdlist retired = {0};
    u64list unl = {0};
    /* Below the loop on a shared core: a sync that wakes must not preempt
     * the loop mid-pass (at nice 0 it did, ~1 ms at a time); at nice 10 it
     * still gets ~10 % of a saturated core, far more than it needs. */
    (void)setpriority(PRIO_PROCESS, (id_t)gettid(), 10);

    pthread_mutex_lock(&sp->mu);
    for (;;) {
        int64_t now = mono_ns();
        bool dirty = sp->sh_appended > sp->sh_durable && !sp->sh_sync_err;
        if (!dirty)
            deadline = 0;
        else if (!deadline)
            deadline = now + interval;
        bool do_sync = dirty && (at_once || sp->stop || sp->sh_sync_want > sp->sh_durable ||
                                 sp->sh_appended - sp->sh_durable >= (uint64_t)sp->o.sync_every ||
                                 now >= deadline);
        bool ack_pending = sp->sh_ack_want > sp->sh_ack_written;
        bool do_ckpt =
            ack_pending && (sp->stop || sp->sh_unlink.n > 0 || now >= ckpt_last + ckpt_gap);
        if (!do_sync && !do_ckpt && sp->sh_retired.n == 0 && sp->sh_unlink.n == 0) {
            if (sp->stop) break;
            int64_t wake = 0;
            if (dirty) wake = deadline;
            if (ack_pending && (!wake || ckpt_last + ckpt_gap < wake)) wake = ckpt_last + ckpt_gap;
            if (wake) {
                struct timespec ts = {wake / 1000000000, wake % 1000000000};
                pthread_cond_timedwait(&sp->wake, &sp->mu, &ts);
            } else {
                pthread_cond_wait(&sp->wake, &sp->mu);
            }
            continue;
        }
        /* Take the work; do the I/O without the lock. */
        uint64_t target = sp->sh_appended;
        int fd = sp->sh_cur_fd;
        bool dir_dirty = do_sync && sp->sh_dir_dirty;
        if (dir_dirty) sp->sh_dir_dirty = false;
        fdlist t1 = retired;
        retired = sp->sh_retired, sp->sh_retired = t1;
        u64list t2 = unl;
        unl = sp->sh_unlink, sp->sh_unlink = t2;
        uint64_t ack = sp->sh_ack_want;
        pthread_mutex_unlock(&sp->mu);

        int64_t t0 = mono_ns();
        int err = 0;
        /* Retired segments first: their records precede the current one's. */
        for (size_t i = 0; i < retired.n; i++) {
            if (fdatasync(retired.v[i]) != 0 && !err) err = errno;
            close(retired.v[i]);
        }
        retired.n = 0;
        if (do_sync) {
            if (dir_dirty && fsync(sp->dir_fd) != 0 && !err) err = errno;
            if (fdatasync(fd) != 0 && !err) err = errno;
        }
        int64_t t1ns = mono_ns();
        bool ckpt_ok = false;
        if (do_ckpt) {
            ckpt_ok = ckpt_write(sp->dir_fd, ack) == 0;
            if (!ckpt_ok) log_warn("spool: writing the checkpoint failed: %s", strerror(errno));
            ckpt_last = t1ns;
        }
        for (size_t i = 0; i < unl.n; i++) {
            char name[SEG_NAME_LEN + 1];
            seg_name(name, unl.v[i]);
            if (unlinkat(sp->dir_fd, name, 0) != 0 && errno != ENOENT)
                log_warn("spool: unlink %s/%s: %s", sp->dir, name, strerror(errno));
        }
        unl.n = 0;

        pthread_mutex_lock(&sp->mu);
        if (err) {
            if (!sp->sh_sync_err) {
                sp->sh_sync_err = err;
                log_error("spool: fdatasync failed (%s): no further appends", strerror(err));
            }
        } else if (do_sync && target > sp->sh_durable) {
            sp->sh_durable = target;
        }
        if (do_sync || err) {
            sp->sh_syncs++;
            uint64_t us = (uint64_t)(t1ns - t0) / 1000;
            if (us > sp->sh_sync_max_us) sp->sh_sync_max_us = us;
            uint64_t one = 1;
            if (write(sp->efd, &one, sizeof one) < 0) {
                /* Counter full or closed: the loop reads durable anyway. */
            }
            pthread_cond_broadcast(&sp->done);
        }
        if (ckpt_ok && ack > sp->sh_ack_written) sp->sh_ack_written = ack;
        if (do_sync) deadline = 0; /* what came in meanwhile gets its own interval */
    }
    pthread_mutex_unlock(&sp->mu);
    free(retired.v);
    free(unl.v);
    return NULL;
}

/* ---------------------------------------------------------------- segments */

static int open_segment(spool *sp, uint64_t base, bool excl)
{
    char name[SEG_NAME_LEN + 1];
    seg_name(name, base);
    int fd =
        openat(sp->dir_fd, name, O_RDWR | O_CREAT | O_CLOEXEC | (excl ? O_EXCL : O_TRUNC), 0600);
    if (fd < 0) return -1;
    /* Unwritten extents: a later fdatasync need not journal a new size. Not
     * posix_fallocate, whose fallback writes zeros. */
    if (!sp->o.no_preallocate && fallocate(fd, 0, 0, (off_t)sp->o.segment_bytes) != 0 &&
        errno != EOPNOTSUPP && errno != ENOSYS) {
        log_debug("spool: fallocate: %s", strerror(errno));
    }
    return fd;
}

/* Starts a new segment at next_seq; the old fd goes to the thread. */
static int rotate(spool *sp)
{
    int fd = open_segment(sp, sp->next_seq, true);
    if (fd < 0) return -1;
    if (push_seg(sp, sp->next_seq, 0) != 0) {
        char name[SEG_NAME_LEN + 1];
        seg_name(name, sp->next_seq);
        close(fd);
        unlinkat(sp->dir_fd, name, 0);
        errno = ENOMEM;
        return -1;
    }
    int old = sp->cur_fd;
    /* A large preallocated tail (rotation before the segment filled) would
     * count against the disk for nothing. */
    if (!sp->o.no_preallocate && sp->o.segment_bytes - sp->cur_off >= 65536)
        (void)ftruncate(old, (off_t)sp->cur_off);
    pthread_mutex_lock(&sp->mu);
    int rc = push_fd(&sp->sh_retired, old);
    sp->sh_cur_fd = fd;
    sp->sh_dir_dirty = true;
    pthread_mutex_unlock(&sp->mu);
    if (rc != 0) close(old); /* unsynced, but its records stay readable */
    sp->cur_fd = fd;
    sp->cur_off = 0;
    sp->cur_broken = false;
    return 0;
}

/* Queues the unlink of every segment (not the current one) whose records
 * are all acked; takes them out of the count at once. */
static size_t drop_acked(spool *sp)
{
    size_t k = 0;
    while (k + 1 < sp->nsegs && sp->segs[k + 1].base - 1 <= sp->acked)
        k++;
    if (!k) return 0;
    pthread_mutex_lock(&sp->mu);
    size_t done = 0;
    for (; done < k; done++)
        if (push_u64(&sp->sh_unlink, sp->segs[done].base) != 0) break;
    if (sp->sh_ack_want < sp->acked) sp->sh_ack_want = sp->acked;
    pthread_cond_signal(&sp->wake);
    pthread_mutex_unlock(&sp->mu);
    for (size_t i = 0; i < done; i++)
        sp->bytes -= sp->segs[i].bytes;
    memmove(sp->segs, sp->segs + done, (sp->nsegs - done) * sizeof *sp->segs);
    sp->nsegs -= done;
    return done;
}

/* ---------------------------------------------------------------- open */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Reads the newest segment: its last intact seq, and cuts a torn tail. */
static int recover_last(spool *sp, uint64_t base, uint64_t *last_seq, uint64_t *size, char *err,
                        size_t errlen)
{
    char name[SEG_NAME_LEN + 1];
    seg_name(name, base);
    uint8_t *b;
    size_t n;
    if (read_file_at(sp->dir_fd, name, UINT64_MAX, &b, &n) != 0) {
        seterr(err, errlen, "spool: reading %s/%s: %s", sp->dir, name, strerror(errno));
        return -1;
    }
    size_t pos = 0, off, len, end = 0;
    usage_event ev;
    uint64_t seq;
    *last_seq = 0;
    while (spool_scan_next(b, n, &pos, &ev, &seq, &off, &len, &sp->corrupt_skips)) {
        if (seq > *last_seq) *last_seq = seq;
        end = off + len;
    }
    free(b);
    *size = end;
    /* Cut the torn tail (and the preallocated zeros), and sync what was
     * written before a kill so it counts as durable. */
    int fd = openat(sp->dir_fd, name, O_RDWR | O_CLOEXEC);
    if (fd < 0 || (end != n && ftruncate(fd, (off_t)end) != 0) || fdatasync(fd) != 0) {
        seterr(err, errlen, "spool: truncating the torn tail of %s/%s: %s", sp->dir, name,
               strerror(errno));
        if (fd >= 0) close(fd);
        return -1;
    }
    close(fd);
    log_debug("spool: cut %zu bytes of torn tail from %s", n - end, name);
    return 0;
}

static int list_segments(spool *sp, uint64_t **out, size_t *count)
{
    int dfd = dup(sp->dir_fd);
    if (dfd < 0) return -1;
    DIR *d = fdopendir(dfd);
    if (!d) {
        close(dfd);
        return -1;
    }
    rewinddir(d);
    u64list l = {0};
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        uint64_t base;
        if (parse_seg_name(de->d_name, &base) && push_u64(&l, base) != 0) {
            free(l.v);
            closedir(d);
            errno = ENOMEM;
            return -1;
        }
    }
    closedir(d);
    if (l.n) qsort(l.v, l.n, sizeof *l.v, cmp_u64);
    *out = l.v;
    *count = l.n;
    return 0;
}

static void spool_free_fds(spool *sp)
{
    if (sp->cur_fd >= 0) close(sp->cur_fd);
    if (sp->efd >= 0) close(sp->efd);
    if (sp->lock_fd >= 0) close(sp->lock_fd); /* releases the flock */
    if (sp->dir_fd >= 0) close(sp->dir_fd);
    for (size_t i = 0; i < sp->sh_retired.n; i++)
        close(sp->sh_retired.v[i]);
    free(sp->sh_retired.v);
    free(sp->sh_unlink.v);
    free(sp->segs);
    free(sp->wbuf);
    free(sp->dir);
    pthread_mutex_destroy(&sp->mu);
    pthread_cond_destroy(&sp->wake);
    pthread_cond_destroy(&sp->done);
    free(sp);
}

spool *spool_open(const char *dir, const spool_options *opts, char *err, size_t errlen)
{
    spool *sp = calloc(1, sizeof *sp);
    if (!sp) {
        seterr(err, errlen, "spool: out of memory");
        return NULL;
    }
    sp->dir_fd = sp->lock_fd = sp->efd = sp->cur_fd = -1;
    if (opts) sp->o = *opts;
    if (!sp->o.segment_bytes) sp->o.segment_bytes = DEFAULT_SEGMENT;
    if (sp->o.segment_bytes < SPOOL_MAX_RECORD) sp->o.segment_bytes = SPOOL_MAX_RECORD;
    if (!sp->o.cap_bytes) sp->o.cap_bytes = DEFAULT_CAP;
    if (sp->o.sync_interval_ms == 0 || sp->o.sync_interval_ms < SPOOL_SYNC_AT_ONCE)
        sp->o.sync_interval_ms = 10;
    if (sp->o.sync_every <= 0) sp->o.sync_every = 1024;
    if (sp->o.checkpoint_interval_ms <= 0) sp->o.checkpoint_interval_ms = 100;
    pthread_mutex_init(&sp->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&sp->wake, &ca);
    pthread_condattr_destroy(&ca);
    pthread_cond_init(&sp->done, NULL);

    uint64_t *bases = NULL;
    size_t nb = 0;
    sp->dir = strdup(dir);
    if (!sp->dir) {
        errno = ENOMEM;
        seterr(err, errlen, "spool: out of memory");
        goto fail;
    }
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        seterr(err, errlen, "spool: mkdir %s: %s", dir, strerror(errno));
        goto fail;
    }
    sp->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (sp->dir_fd < 0) {
        seterr(err, errlen, "spool: open %s: %s", dir, strerror(errno));
        goto fail;
    }
    sp->lock_fd = openat(sp->dir_fd, "lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (sp->lock_fd < 0 || flock(sp->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        seterr(err, errlen, "spool: lock %s/lock: %s", dir,
               errno == EWOULDBLOCK ? "in use by another process" : strerror(errno));
        goto fail;
    }
    unlinkat(sp->dir_fd, CKPT_TMP, 0);
    sp->acked = ckpt_read(sp->dir_fd);

    if (list_segments(sp, &bases, &nb) != 0) {
        seterr(err, errlen, "spool: listing %s: %s", dir, strerror(errno));
        goto fail;
    }
    uint64_t last_seq = 0;
    for (size_t i = 0; i < nb; i++) {
        uint64_t size;
        if (i + 1 == nb) {
            if (recover_last(sp, bases[i], &last_seq, &size, err, errlen) != 0) goto fail;
        } else {
            /* A killed run may have left it unsynced: sync it now, so that
             * everything from before this open counts as durable. */
            char name[SEG_NAME_LEN + 1];
            struct stat st;
            seg_name(name, bases[i]);
            int fd = openat(sp->dir_fd, name, O_RDONLY | O_CLOEXEC);
            if (fd < 0 || fstat(fd, &st) != 0 || fdatasync(fd) != 0) {
                seterr(err, errlen, "spool: syncing %s/%s: %s", dir, name, strerror(errno));
                if (fd >= 0) close(fd);
                goto fail;
            }
            close(fd);
            size = (uint64_t)st.st_size;
        }
        if (push_seg(sp, bases[i], size) != 0) {
            errno = ENOMEM;
            seterr(err, errlen, "spool: out of memory");
            goto fail;
        }
        sp->bytes += size;
    }
    /* Never reuse a number: above the last intact record, the newest
     * segment's first number and the checkpoint. */
    sp->next_seq = last_seq + 1;
    if (nb && bases[nb - 1] > sp->next_seq) sp->next_seq = bases[nb - 1];
    if (sp->acked + 1 > sp->next_seq) sp->next_seq = sp->acked + 1;

    /* A fresh segment for this run: a file with a damaged past is never
     * appended to. The newest old one is reused only if it holds nothing
     * intact and already bears the number (it was truncated to 0). */
    bool reuse = nb && bases[nb - 1] == sp->next_seq;
    if (reuse) {
        sp->bytes -= sp->segs[sp->nsegs - 1].bytes;
        sp->nsegs--;
    }
    sp->cur_fd = open_segment(sp, sp->next_seq, !reuse);
    if (sp->cur_fd < 0 || push_seg(sp, sp->next_seq, 0) != 0 || fsync(sp->dir_fd) != 0) {
        seterr(err, errlen, "spool: creating a segment in %s: %s", dir, strerror(errno));
        goto fail;
    }
    free(bases);
    bases = NULL;
    drop_acked(sp); /* queued for the thread, which starts below */

    sp->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (sp->efd < 0) {
        seterr(err, errlen, "spool: eventfd: %s", strerror(errno));
        goto fail;
    }
    sp->sh_appended = sp->sh_durable = sp->reported_durable = sp->next_seq - 1;
    sp->sh_ack_want = sp->sh_ack_written = sp->acked; /* it is on disk already */
    sp->sh_cur_fd = sp->cur_fd;
    int rc = pthread_create(&sp->thr, NULL, sync_main, sp);
    if (rc != 0) {
        errno = rc;
        seterr(err, errlen, "spool: starting the sync thread: %s", strerror(rc));
        goto fail;
    }
    sp->thr_started = true;
    return sp;

fail : {
    int e = errno;
    free(bases);
    spool_free_fds(sp);
    errno = e;
    return NULL;
}
}

int spool_close(spool *sp)
{
    if (!sp) return 0;
    if (!sp->o.no_preallocate && sp->cur_fd >= 0) (void)ftruncate(sp->cur_fd, (off_t)sp->cur_off);
    int rc = 0;
    if (sp->thr_started) {
        pthread_mutex_lock(&sp->mu);
        sp->stop = true;
        pthread_cond_signal(&sp->wake);
        pthread_mutex_unlock(&sp->mu);
        pthread_join(sp->thr, NULL);
        if (sp->sh_sync_err) {
            errno = sp->sh_sync_err;
            rc = -1;
        }
    }
    int e = errno;
    spool_free_fds(sp);
    errno = e;
    return rc;
}

/* ---------------------------------------------------------------- append */

/* Writes the run of records in wbuf (numbered next_seq.. in order) at the
 * end of the current segment in one pwrite. On failure nothing of it
 * counts: the bytes that made it are cut, and if that fails too the
 * numbers are burnt (a reader may find whole records among the fragment;
 * they are real events, so replaying them is right) and the next append
 * starts a new segment. */
static int write_run(spool *sp, const uint8_t *wbuf, size_t len, size_t nrec)
{
    size_t done = 0;
    while (done < len) {
        ssize_t w = pwrite(sp->cur_fd, wbuf + done, len - done, (off_t)(sp->cur_off + done));
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            int e = w < 0 ? errno : EIO;
            if (done && ftruncate(sp->cur_fd, (off_t)sp->cur_off) != 0) {
                sp->cur_broken = true;
                sp->next_seq += nrec;
            }
            errno = e;
            return -1;
        }
        done += (size_t)w;
    }
    uint64_t last = sp->next_seq + nrec - 1;
    sp->next_seq += nrec;
    sp->cur_off += len;
    sp->segs[sp->nsegs - 1].bytes += len;
    sp->bytes += len;

    pthread_mutex_lock(&sp->mu);
    bool was_clean = sp->sh_appended == sp->sh_durable;
    uint64_t before = sp->sh_appended - sp->sh_durable;
    sp->sh_appended = last;
    if (was_clean || (before < (uint64_t)sp->o.sync_every &&
                      sp->sh_appended - sp->sh_durable >= (uint64_t)sp->o.sync_every))
        pthread_cond_signal(&sp->wake);
    pthread_mutex_unlock(&sp->mu);
    return 0;
}

/* Room for the next record of n bytes after `pending` bytes not yet
 * written: 0, or 1 when the pending run must be written first (the
 * segment is full; with nothing pending it rotates), or SPOOL_FULL /
 * SPOOL_ERROR. */
static int make_room(spool *sp, size_t pending, size_t n)
{
    if (sp->cur_broken || (sp->cur_off > 0 && sp->cur_off + pending + n > sp->o.segment_bytes)) {
        if (pending) return 1; /* write the pending run first */
        if (rotate(sp) != 0) return SPOOL_ERROR;
        drop_acked(sp);
    }
    if (sp->bytes + pending + n > sp->o.cap_bytes) {
        /* A current segment that is all acked only waits for rotation. */
        if (!pending && sp->cur_off > 0 && sp->acked >= sp->next_seq - 1) {
            if (rotate(sp) != 0) return SPOOL_ERROR;
            drop_acked(sp);
        }
        if (sp->bytes + pending + n > sp->o.cap_bytes) {
            errno = ENOSPC;
            return SPOOL_FULL;
        }
    }
    return 0;
}

int spool_append_many(spool *sp, const usage_event *evs, size_t n, size_t *appended,
                      uint64_t *first_seq)
{
    *appended = 0;
    if (first_seq) *first_seq = sp->next_seq;
    if (__atomic_load_n(&sp->sh_sync_err, __ATOMIC_RELAXED)) {
        errno = EIO;
        return SPOOL_ERROR;
    }
    size_t need = n * SPOOL_MAX_RECORD;
    if (need > sp->wcap) {
        uint8_t *nb = realloc(sp->wbuf, need);
        if (!nb) {
            errno = ENOMEM;
            return SPOOL_ERROR;
        }
        sp->wbuf = nb;
        sp->wcap = need;
    }
    size_t len = 0, nrec = 0;
    for (size_t i = 0; i < n;) {
        /* encoded in place: wbuf holds n records of any size; a record
         * that does not fit the segment is left uncounted and encoded again */
        size_t rn =
            spool_encode_record(&evs[i], sp->next_seq + nrec, sp->wbuf + len, SPOOL_MAX_RECORD);
        int room = rn ? make_room(sp, len, rn) : (errno = EINVAL, SPOOL_ERROR);
        if (room == 0) {
            len += rn;
            nrec++;
            i++;
            continue;
        }
        if (!len) return room;
        /* Write what is pending, then look again: a rotation may make room
         * (the record is encoded again: its number stays the same). */
        if (write_run(sp, sp->wbuf, len, nrec) != 0) return SPOOL_ERROR;
        *appended += nrec;
        len = nrec = 0;
    }
    if (len && write_run(sp, sp->wbuf, len, nrec) != 0) return SPOOL_ERROR;
    *appended += nrec;
    return SPOOL_OK;
}

int spool_append(spool *sp, const usage_event *ev, uint64_t *seq_out)
{
    size_t n;
    uint64_t seq;
    int rc = spool_append_many(sp, ev, 1, &n, &seq);
    if (rc == SPOOL_OK && seq_out) *seq_out = seq;
    return rc;
}

void spool_request_sync(spool *sp)
{
    pthread_mutex_lock(&sp->mu);
    if (sp->sh_appended > sp->sh_durable) {
        sp->sh_sync_want = sp->sh_appended;
        pthread_cond_signal(&sp->wake);
    }
    pthread_mutex_unlock(&sp->mu);
}

int spool_sync_now(spool *sp)
{
    pthread_mutex_lock(&sp->mu);
    uint64_t want = sp->sh_appended;
    if (want > sp->sh_sync_want) sp->sh_sync_want = want;
    pthread_cond_signal(&sp->wake);
    while (sp->sh_durable < want && !sp->sh_sync_err)
        pthread_cond_wait(&sp->done, &sp->mu);
    int e = sp->sh_sync_err;
    pthread_mutex_unlock(&sp->mu);
    if (e) {
        errno = e;
        return -1;
    }
    return 0;
}

int spool_sync_fd(const spool *sp)
{
    return sp->efd;
}

uint64_t spool_durable_seq(spool *sp)
{
    pthread_mutex_lock(&sp->mu);
    uint64_t d = sp->sh_durable;
    pthread_mutex_unlock(&sp->mu);
    return d;
}

uint64_t spool_on_sync_ready(spool *sp)
{
    uint64_t junk;
    while (read(sp->efd, &junk, sizeof junk) > 0) {
    }
    uint64_t d = spool_durable_seq(sp);
    if (d > sp->reported_durable) {
        sp->reported_durable = d;
        if (sp->o.on_durable) sp->o.on_durable(sp->o.ctx, d);
    }
    return d;
}

void spool_ack(spool *sp, uint64_t seq)
{
    if (seq > sp->next_seq - 1) seq = sp->next_seq - 1;
    if (seq <= sp->acked) return;
    sp->acked = seq;
    if (drop_acked(sp)) return; /* drop_acked scheduled the checkpoint and woke the thread */
    pthread_mutex_lock(&sp->mu);
    bool first = sp->sh_ack_want == sp->sh_ack_written;
    sp->sh_ack_want = seq;
    if (first) pthread_cond_signal(&sp->wake);
    pthread_mutex_unlock(&sp->mu);
}

uint64_t spool_bytes(const spool *sp)
{
    return sp->bytes;
}

uint64_t spool_acked_seq(const spool *sp)
{
    return sp->acked;
}

void spool_get_stats(spool *sp, spool_stats *out)
{
    memset(out, 0, sizeof *out);
    out->bytes = sp->bytes;
    out->segments = sp->nsegs;
    out->appended = sp->next_seq - 1;
    out->acked = sp->acked;
    out->corrupt_skips = sp->corrupt_skips;
    pthread_mutex_lock(&sp->mu);
    out->durable = sp->sh_durable;
    out->syncs = sp->sh_syncs;
    out->sync_max_us = sp->sh_sync_max_us;
    out->sync_error = sp->sh_sync_err;
    pthread_mutex_unlock(&sp->mu);
}

/* ---------------------------------------------------------------- replay */

struct spool_cursor {
    spool *sp;
    uint64_t last;      /* highest seq yielded (or the starting point) */
    uint64_t next_base; /* the next segment to read has base >= this */
    uint8_t *buf;
    size_t len, pos;
};

spool_cursor *spool_cursor_new(spool *sp, uint64_t after_seq)
{
    spool_cursor *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->sp = sp;
    c->last = after_seq;
    return c;
}

void spool_cursor_free(spool_cursor *c)
{
    if (!c) return;
    free(c->buf);
    free(c);
}

/* Loads the next segment that may hold a record above c->last. 1 loaded,
 * 0 none left, -1 error. */
static int cursor_load(spool_cursor *c)
{
    spool *sp = c->sp;
    for (size_t i = 0; i < sp->nsegs; i++) {
        const seg *s = &sp->segs[i];
        if (s->base < c->next_base) continue;
        bool current = i + 1 == sp->nsegs;
        c->next_base = s->base + 1;
        if (!current && sp->segs[i + 1].base - 1 <= c->last)
            continue; /* nothing above the start in it */
        char name[SEG_NAME_LEN + 1];
        seg_name(name, s->base);
        free(c->buf);
        c->buf = NULL;
        c->len = c->pos = 0;
        if (read_file_at(sp->dir_fd, name, current ? sp->cur_off : UINT64_MAX, &c->buf, &c->len) !=
            0) {
            if (errno == ENOENT) continue; /* unlinked under us: all acked */
            c->next_base = s->base;        /* retry this one */
            return -1;
        }
        return 1;
    }
    return 0;
}

int spool_cursor_next(spool_cursor *c, usage_event *ev, uint64_t *seq)
{
    for (;;) {
        if (c->buf) {
            size_t off, len;
            uint64_t s;
            while (spool_scan_next(c->buf, c->len, &c->pos, ev, &s, &off, &len,
                                   &c->sp->corrupt_skips)) {
                if (s <= c->last) continue;
                c->last = s;
                *seq = s;
                return 1;
            }
            free(c->buf);
            c->buf = NULL;
        }
        int r = cursor_load(c);
        if (r <= 0) return r;
    }
}

int spool_replay(spool *sp, spool_replay_cb cb, void *ctx)
{
    spool_cursor *c = spool_cursor_new(sp, sp->acked);
    if (!c) return -1;
    usage_event ev;
    uint64_t seq;
    int r;
    while ((r = spool_cursor_next(c, &ev, &seq)) == 1) {
        int stop = cb(ctx, seq, &ev);
        if (stop) {
            spool_cursor_free(c);
            return stop;
        }
    }
    int e = errno;
    spool_cursor_free(c);
    errno = e;
    return r;
}

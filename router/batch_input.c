/* Batch input files (router/batch_input.h). */
#include "router/batch_input.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "lib/jtok.h"
#include "router/canon.h"

/* The endpoints a line may name. */
static const char *const endpoints[] = {"/v1/chat/completions", NULL};

struct batch_ids {
    uint64_t *hash; /* 0 = empty slot; the custom_ids' FNV-1a hashes (| 1) */
    uint32_t *at;   /* where the id starts in ids */
    uint32_t cap, n;
    buf ids; /* the ids, NUL-terminated, one after another */
};

static uint64_t fnv(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return h | 1;
}

batch_ids *batch_ids_new(void)
{
    batch_ids *s = calloc(1, sizeof *s);
    if (!s) abort();
    s->cap = 1024;
    s->hash = calloc(s->cap, sizeof *s->hash);
    s->at = calloc(s->cap, sizeof *s->at);
    if (!s->hash || !s->at) abort();
    return s;
}

void batch_ids_free(batch_ids *s)
{
    if (!s) return;
    free(s->hash);
    free(s->at);
    buf_free(&s->ids);
    free(s);
}

/* Twice the slots: the table stays at most half full. */
static void ids_grow(batch_ids *s)
{
    uint32_t cap = s->cap * 2;
    uint64_t *hash = calloc(cap, sizeof *hash);
    uint32_t *at = calloc(cap, sizeof *at);
    if (!hash || !at) abort();
    for (uint32_t i = 0; i < s->cap; i++) {
        if (!s->hash[i]) continue;
        uint32_t j = (uint32_t)(s->hash[i] % cap);
        while (hash[j])
            j = (j + 1) % cap;
        hash[j] = s->hash[i];
        at[j] = s->at[i];
    }
    free(s->hash);
    free(s->at);
    s->hash = hash;
    s->at = at;
    s->cap = cap;
}

bool batch_ids_add(batch_ids *s, const char *id, size_t n)
{
    if ((s->n + 1) * 2 > s->cap) ids_grow(s);
    uint64_t h = fnv(id, n);
    uint32_t i = (uint32_t)(h % s->cap);
    for (; s->hash[i]; i = (i + 1) % s->cap)
        if (s->hash[i] == h && strlen(s->ids.data + s->at[i]) == n &&
            memcmp(s->ids.data + s->at[i], id, n) == 0)
            return false;
    s->hash[i] = h;
    s->at[i] = (uint32_t)s->ids.len;
    s->n++;
    buf_append(&s->ids, id, n);
    buf_append_char(&s->ids, '\0');
    return true;
}

static int fail(char *err, size_t errlen, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(char *err, size_t errlen, int line, const char *fmt, ...)
{
    int n = snprintf(err, errlen, "line %d: ", line);
    va_list ap;
    va_start(ap, fmt);
    if (n >= 0 && (size_t)n < errlen) vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
    va_end(ap);
    return -1;
}

/* One line: its fields, then its body as a live request. */
static int check_line(const char *s, size_t n, int line, jdoc *d, jdoc *bd, buf *strings,
                      batch_ids *ids, batch_input_info *info, batch_line_cost cost, void *ctx,
                      char *err, size_t errlen)
{
    char why[128];
    size_t pos = 0;
    if (jdoc_parse(d, s, n, why, sizeof why, &pos) != 0)
        return fail(err, errlen, line, "not valid JSON: %s (at byte %zu of the line)", why, pos);
    if (jdoc_type(d, 0) != JT_OBJECT)
        return fail(err, errlen, line,
                    "each line must be a JSON object with custom_id, method, url and body");
    uint32_t id = jdoc_get(d, 0, "custom_id"), method = jdoc_get(d, 0, "method"),
             url = jdoc_get(d, 0, "url"), body = jdoc_get(d, 0, "body");
    buf v = BUF_INIT;
    if (jdoc_type(d, id) != JT_STRING || d->t[id].end == d->t[id].start)
        return fail(err, errlen, line, "custom_id must be a non-empty string");
    jdoc_str_append(d, id, &v);
    bool fresh = batch_ids_add(ids, v.data, v.len);
    buf_free(&v);
    if (!fresh) return fail(err, errlen, line, "custom_id is not unique: each line needs its own");
    if (!jdoc_str_eq(d, method, "POST")) return fail(err, errlen, line, "method must be \"POST\"");
    const char *ep = NULL;
    for (int i = 0; endpoints[i] && !ep; i++)
        if (jdoc_str_eq(d, url, endpoints[i])) ep = endpoints[i];
    if (!ep) return fail(err, errlen, line, "url must be \"/v1/chat/completions\"");
    if (!info->endpoint[0]) snprintf(info->endpoint, sizeof info->endpoint, "%s", ep);
    if (strcmp(info->endpoint, ep) != 0)
        return fail(err, errlen, line, "url is %s but line 1 has %s: one batch, one endpoint", ep,
                    info->endpoint);
    if (jdoc_type(d, body) != JT_OBJECT) return fail(err, errlen, line, "body must be an object");
    size_t blen;
    const char *b = jdoc_raw(d, body, &blen);
    canon_request cr;
    canon_error ce;
    buf_reset(strings);
    if (canon_parse_chat(b, blen, bd, strings, &cr, &ce) != 0)
        return fail(err, errlen, line, "body%s%s: %s", ce.param[0] ? "." : "", ce.param,
                    ce.message);
    if (cr.stream) return fail(err, errlen, line, "body.stream: a batch request cannot stream");
    if (cost) info->worst_pusd += cost(ctx, b, blen);
    return 0;
}

int batch_input_check(const char *data, size_t len, batch_input_info *info, char *err,
                      size_t errlen)
{
    return batch_input_check_cost(data, len, info, NULL, NULL, err, errlen);
}

int batch_input_check_cost(const char *data, size_t len, batch_input_info *info,
                           batch_line_cost cost, void *ctx, char *err, size_t errlen)
{
    memset(info, 0, sizeof *info);
    if (len > BATCH_MAX_BYTES) {
        snprintf(err, errlen, "the file is %zu bytes; a batch file holds at most %d", len,
                 BATCH_MAX_BYTES);
        return -1;
    }
    batch_ids *ids = batch_ids_new();
    jdoc d = JDOC_INIT, bd = JDOC_INIT;
    buf strings = BUF_INIT;
    int rc = 0, line = 0;
    const char *p = data, *end = data + len;
    while (rc == 0 && p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        if (n && p[n - 1] == '\r') n--;
        line++;
        if (n == 0) {
            if (nl && nl + 1 < end) rc = fail(err, errlen, line, "empty line");
        } else if (info->lines == BATCH_MAX_LINES) {
            rc = fail(err, errlen, line, "a batch takes at most %d requests", BATCH_MAX_LINES);
        } else {
            rc = check_line(p, n, line, &d, &bd, &strings, ids, info, cost, ctx, err, errlen);
            info->lines++;
        }
        p = nl ? nl + 1 : end;
    }
    if (rc == 0 && info->lines == 0) rc = fail(err, errlen, 1, "the file holds no requests");
    batch_ids_free(ids);
    buf_free(&strings);
    jdoc_free(&d);
    jdoc_free(&bd);
    return rc;
}

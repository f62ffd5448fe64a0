/* The batch core: the store, each batch's clock on the event loop, the
 * knobs (/_mock/batch) and the counters (/_mock/stats, /_mock/batch_lines). */
#include "tests/mock/batch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CANCEL_MS 100   /* cancelling (canceling) lasts this long */
#define FINALIZE_MS 50  /* OpenAI's finalizing step */
#define TICK_MIN_MS 5   /* a batch runs its due lines at most this often */
#define TICK_MAX_MS 200 /* and at least this often */

static struct batch *batches_head;
static json_tokener *line_tok;

/* The knobs: processing time of new batches, the next creation's refusal,
 * the next batch's expiry. */
static struct {
    int default_ms; /* --batch-ms; /_mock/reset comes back to it */
    int processing_ms;
    int fail_create;
    bool expire;
} knob = {500, 500, 0, false};

/* Counters: [0] OpenAI, [1] Anthropic, [2] Gemini. */
static struct {
    long created[3];
    long lines_run[3];
} count;

/* custom_id -> times submitted in a started batch, times run; every
 * dialect's ids in one table. Open addressing, grown at 1/2 full. */
struct idslot {
    char *key;
    uint64_t h;
    long submitted, run;
};
static struct {
    struct idslot *s;
    size_t cap, used;
    long repeated_submitted, repeated_run; /* ids whose count went past 1 */
} ids;

static int slot_of(enum dialect d)
{
    return d == D_OPENAI ? 0 : d == D_ANTHROPIC ? 1 : 2;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t hash_bytes(const char *s, size_t len)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return h;
}

long gbuf_add(struct gbuf *g, const char *s, size_t len)
{
    if (g->len + len + 1 > g->cap) {
        size_t cap = g->cap ? g->cap : 4096;
        while (cap < g->len + len + 1)
            cap *= 2;
        char *np = realloc(g->p, cap);
        if (!np) return -1;
        g->p = np;
        g->cap = cap;
    }
    size_t off = g->len;
    memcpy(g->p + off, s, len);
    g->p[off + len] = '\0';
    g->len += len + 1;
    return (long)off;
}

/* ---- the custom_id table ------------------------------------------------- */

static bool ids_grow(void)
{
    size_t cap = ids.cap ? ids.cap * 2 : 1024;
    struct idslot *s = calloc(cap, sizeof(*s));
    if (!s) return false;
    for (size_t i = 0; i < ids.cap; i++) {
        if (!ids.s[i].key) continue;
        size_t k = ids.s[i].h & (cap - 1);
        while (s[k].key)
            k = (k + 1) & (cap - 1);
        s[k] = ids.s[i];
    }
    free(ids.s);
    ids.s = s;
    ids.cap = cap;
    return true;
}

static struct idslot *ids_get(const char *key, size_t len)
{
    if ((ids.used + 1) * 2 > ids.cap && !ids_grow()) return NULL;
    uint64_t h = hash_bytes(key, len);
    size_t k = h & (ids.cap - 1);
    for (; ids.s[k].key; k = (k + 1) & (ids.cap - 1))
        if (ids.s[k].h == h && !strcmp(ids.s[k].key, key)) return &ids.s[k];
    if (!(ids.s[k].key = strndup(key, len))) return NULL;
    ids.s[k].h = h;
    ids.used++;
    return &ids.s[k];
}

static void ids_clear(void)
{
    for (size_t i = 0; i < ids.cap; i++)
        free(ids.s[i].key);
    free(ids.s);
    memset(&ids, 0, sizeof(ids));
}

static const char *line_cid(const struct batch *b, uint32_t i)
{
    return b->cids.p + b->lines[i].cid;
}

long batch_each_duplicate(struct batch *b, void (*cb)(struct batch *, uint32_t, uint32_t))
{
    size_t cap = 16;
    while (cap < (size_t)b->n * 2)
        cap *= 2;
    uint32_t *t = calloc(cap, sizeof(*t)); /* line index + 1; 0 = empty */
    if (!t) return -1;
    long dups = 0;
    for (uint32_t i = 0; i < b->n; i++) {
        const char *cid = line_cid(b, i);
        if (!b->lines[i].cid_len) continue; /* a line that had none */
        size_t k = hash_bytes(cid, b->lines[i].cid_len) & (cap - 1);
        for (; t[k]; k = (k + 1) & (cap - 1))
            if (!strcmp(line_cid(b, t[k] - 1), cid)) break;
        if (t[k]) {
            dups++;
            if (cb) cb(b, i, t[k] - 1);
        } else {
            t[k] = i + 1;
        }
    }
    free(t);
    return dups;
}

/* ---- the store ----------------------------------------------------------- */

static void on_tick(evutil_socket_t fd, short what, void *arg);
static void count_submitted(struct batch *b);

struct batch *batch_new(const struct batch_ops *ops, const char *id_prefix, bool validating)
{
    struct batch *b = calloc(1, sizeof(*b));
    if (!b) return NULL;
    b->ops = ops;
    b->state = validating ? BS_VALIDATING : BS_IN_PROGRESS;
    b->created_at = (long)time(NULL);
    b->processing_ms = knob.processing_ms;
    api_new_id(b->id, sizeof(b->id), id_prefix);
    b->out = evbuffer_new();
    b->err = evbuffer_new();
    b->errors = evbuffer_new();
    b->timer = evtimer_new(mock_base, on_tick, b);
    if (!b->out || !b->err || !b->errors || !b->timer) {
        batch_discard(b);
        return NULL;
    }
    return b;
}

int batch_add_line(struct batch *b, const char *text, size_t len, const char *cid, size_t cid_len)
{
    if (b->n % 1024 == 0) {
        struct bline *nl = realloc(b->lines, (b->n + 1024) * sizeof(*nl));
        if (!nl) return -1;
        b->lines = nl;
    }
    long off = gbuf_add(&b->text, text, len), coff = gbuf_add(&b->cids, cid, cid_len);
    if (off < 0 || coff < 0) return -1;
    b->lines[b->n++] = (struct bline){(size_t)off, len, (size_t)coff, cid_len};
    return 0;
}

static void batch_free(struct batch *b)
{
    if (b->timer) event_free(b->timer);
    if (b->out) evbuffer_free(b->out);
    if (b->err) evbuffer_free(b->err);
    if (b->errors) evbuffer_free(b->errors);
    free(b->text.p);
    free(b->cids.p);
    free(b->lines);
    free(b->metadata);
    free(b->res.p);
    free(b->res_off);
    free(b);
}

void batch_discard(struct batch *b)
{
    batch_free(b);
}

static void arm(struct batch *b, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(b->timer, &tv);
}

void batch_start(struct batch *b)
{
    b->next = batches_head;
    batches_head = b;
    count.created[slot_of(b->ops->d)]++;
    b->expire = knob.expire;
    knob.expire = false;
    if (b->state == BS_IN_PROGRESS) {
        b->in_progress_at = b->created_at;
        b->start_ms = now_ms();
        count_submitted(b);
    }
    arm(b, 0);
}

void batch_delete(struct batch *b)
{
    for (struct batch **pp = &batches_head; *pp; pp = &(*pp)->next)
        if (*pp == b) {
            *pp = b->next;
            break;
        }
    batch_free(b);
}

struct batch *batch_find(enum dialect d, const char *id, size_t len)
{
    for (struct batch *b = batches_head; b; b = b->next)
        if (b->ops->d == d && strlen(b->id) == len && !memcmp(b->id, id, len)) return b;
    return NULL;
}

struct batch *batch_newest(void)
{
    return batches_head;
}

int batch_take_fail_create(void)
{
    int s = knob.fail_create;
    knob.fail_create = 0;
    return s;
}

uint32_t batch_pending(const struct batch *b)
{
    long left = (long)b->n - (long)b->done - b->canceled - b->expired;
    return left > 0 ? (uint32_t)left : 0;
}

/* ---- the clock ----------------------------------------------------------- */

void batch_set_state(struct batch *b, enum bstate s)
{
    long t = (long)time(NULL);
    b->state = s;
    switch (s) {
    case BS_IN_PROGRESS:
        b->in_progress_at = t;
        b->start_ms = now_ms();
        break;
    case BS_FINALIZING:
        b->finalizing_at = t;
        break;
    case BS_CANCELLING:
        b->cancelling_at = t;
        break;
    case BS_FAILED:
        b->failed_at = t;
        break;
    case BS_COMPLETED:
    case BS_CANCELLED:
    case BS_EXPIRED:
        b->ended_at = t;
        break;
    case BS_VALIDATING:
        break;
    }
}

/* The custom_ids of a batch that passed validation count as submitted. */
static void count_submitted(struct batch *b)
{
    for (uint32_t i = 0; i < b->n; i++) {
        if (!b->lines[i].cid_len) continue;
        struct idslot *s = ids_get(line_cid(b, i), b->lines[i].cid_len);
        if (s && ++s->submitted == 2) ids.repeated_submitted++;
    }
}

static void run_line(struct batch *b, uint32_t i)
{
    if (!line_tok && !(line_tok = json_tokener_new())) return;
    struct evbuffer *body = evbuffer_new();
    json_object *root = NULL;
    json_object *req = b->ops->body(b, i, line_tok, &root);
    struct mock_answer a;
    mock_answer_line(b->ops->d, req, b->ops->d == D_GEMINI ? b->model : NULL, body, &a);
    json_object_put(root);
    /* the dialect bodies end in a newline; a result line must not */
    size_t len = evbuffer_get_length(body);
    const char *p = len ? (const char *)evbuffer_pullup(body, -1) : "";
    while (len && p[len - 1] == '\n')
        len--;
    b->ops->record(b, i, &a, p, len);
    evbuffer_free(body);
    count.lines_run[slot_of(b->ops->d)]++;
    if (!b->lines[i].cid_len) return; /* Gemini: a line without a key */
    struct idslot *s = ids_get(line_cid(b, i), b->lines[i].cid_len);
    if (s && ++s->run == 2) ids.repeated_run++;
}

/* Runs lines (from the last backwards) until `target` of them have run. */
static void run_until(struct batch *b, uint32_t target)
{
    while (b->done < target && b->done < b->n) {
        run_line(b, b->n - 1 - b->done);
        b->done++;
    }
}

/* How many lines are due `now`: in proportion to the time elapsed, all at
 * the deadline; an expiring batch stops at half. */
static uint32_t due(const struct batch *b, int64_t now)
{
    int64_t el = now - b->start_ms;
    uint32_t t = el >= b->processing_ms || b->processing_ms <= 0
                     ? b->n
                     : (uint32_t)((uint64_t)b->n * (uint64_t)el / (uint64_t)b->processing_ms);
    if (b->expire && t > b->n / 2) t = b->n / 2;
    return t;
}

static int tick_ms(const struct batch *b)
{
    int t = b->processing_ms / 20;
    return t < TICK_MIN_MS ? TICK_MIN_MS : t > TICK_MAX_MS ? TICK_MAX_MS : t;
}

/* Every line not run ends cancelled or expired, then the results are done. */
static void end_unrun(struct batch *b, bool expired, enum bstate final)
{
    for (uint32_t k = b->done; k < b->n; k++) {
        b->ops->unrun(b, b->n - 1 - k, expired);
        if (expired)
            b->expired++;
        else
            b->canceled++;
    }
    b->ops->finish(b);
    batch_set_state(b, final);
}

static void progress(struct batch *b)
{
    int64_t now = now_ms();
    run_until(b, due(b, now));
    int64_t left = b->start_ms + b->processing_ms - now;
    if (left > 0) {
        arm(b, left < tick_ms(b) ? (int)left : tick_ms(b));
    } else if (b->expire) {
        end_unrun(b, true, BS_EXPIRED);
    } else if (b->ops->d == D_OPENAI) {
        batch_set_state(b, BS_FINALIZING);
        arm(b, FINALIZE_MS);
    } else {
        b->ops->finish(b);
        batch_set_state(b, BS_COMPLETED);
    }
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct batch *b = arg;
    switch (b->state) {
    case BS_VALIDATING:
        if (b->ops->validate && !b->ops->validate(b)) {
            batch_set_state(b, BS_FAILED);
            return;
        }
        count_submitted(b);
        batch_set_state(b, BS_IN_PROGRESS);
        progress(b);
        break;
    case BS_IN_PROGRESS:
        progress(b);
        break;
    case BS_FINALIZING:
        b->ops->finish(b);
        batch_set_state(b, BS_COMPLETED);
        break;
    case BS_CANCELLING:
        end_unrun(b, false, BS_CANCELLED);
        break;
    default:
        break;
    }
}

bool batch_cancel(struct batch *b)
{
    if (b->state == BS_IN_PROGRESS) {
        run_until(b, due(b, now_ms())); /* what ran until now stays run */
    } else if (b->state != BS_VALIDATING) {
        return false;
    }
    batch_set_state(b, BS_CANCELLING);
    evtimer_del(b->timer);
    arm(b, CANCEL_MS);
    return true;
}

/* ---- control and counters ------------------------------------------------ */

void batch_rfc3339(struct evbuffer *out, long t)
{
    char buf[40];
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(buf, sizeof(buf), "\"%Y-%m-%dT%H:%M:%SZ\"", &tm);
    evbuffer_add(out, buf, strlen(buf));
}

void batch_set_default_ms(int ms)
{
    knob.default_ms = knob.processing_ms = ms;
}

static void knobs_render(struct evbuffer *out)
{
    evbuffer_add_printf(out, "{\"processing_ms\":%d,\"fail_create\":%d,\"expire\":%s}\n",
                        knob.processing_ms, knob.fail_create, knob.expire ? "true" : "false");
}

/* POST /_mock/batch {"processing_ms":N, "fail_create":STATUS, "expire":true}:
 * each key present changes its knob; answers the knobs. */
const char *batch_control(json_object *root, struct evbuffer *out)
{
    json_object *v;
    if (!root) return "need a JSON object: {processing_ms, fail_create, expire}";
    if (json_object_object_get_ex(root, "processing_ms", &v)) {
        if (!json_object_is_type(v, json_type_int) || json_object_get_int(v) < 0)
            return "processing_ms: need an integer >= 0";
        knob.processing_ms = json_object_get_int(v);
    }
    if (json_object_object_get_ex(root, "fail_create", &v)) {
        int s = json_object_get_int(v);
        if (!json_object_is_type(v, json_type_int) || (s != 0 && (s < 400 || s > 599)))
            return "fail_create: need an HTTP status 400-599 (0 clears it)";
        knob.fail_create = s;
    }
    if (json_object_object_get_ex(root, "expire", &v)) {
        if (!json_object_is_type(v, json_type_boolean)) return "expire: need true or false";
        knob.expire = json_object_get_boolean(v);
    }
    knobs_render(out);
    return NULL;
}

void batch_knobs_render(struct evbuffer *out)
{
    knobs_render(out);
}

/* ,"batch":{...} inside /_mock/stats */
void batch_stats_render(struct evbuffer *out)
{
    ADD_NUM(out, ",\"batch\":{\"created\":{\"openai\":", count.created[0]);
    ADD_NUM(out, ",\"anthropic\":", count.created[1]);
    ADD_NUM(out, ",\"gemini\":", count.created[2]);
    ADD_NUM(out, "},\"lines_run\":{\"openai\":", count.lines_run[0]);
    ADD_NUM(out, ",\"anthropic\":", count.lines_run[1]);
    ADD_NUM(out, ",\"gemini\":", count.lines_run[2]);
    ADD_NUM(out, ",\"total\":", count.lines_run[0] + count.lines_run[1] + count.lines_run[2]);
    ADD_NUM(out, "},\"custom_ids_submitted_twice\":", ids.repeated_submitted);
    ADD_NUM(out, ",\"custom_ids_run_twice\":", ids.repeated_run);
    ADD_LIT(out, "}");
}

/* GET /_mock/batch_lines[?repeated=1]: custom_id -> {submitted, run}. */
void batch_lines_render(struct evbuffer *out, bool repeated_only)
{
    ADD_NUM(out, "{\"custom_ids_submitted_twice\":", ids.repeated_submitted);
    ADD_NUM(out, ",\"custom_ids_run_twice\":", ids.repeated_run);
    ADD_LIT(out, ",\"lines\":{");
    bool first = true;
    for (size_t i = 0; i < ids.cap; i++) {
        const struct idslot *s = &ids.s[i];
        if (!s->key || (repeated_only && s->submitted < 2 && s->run < 2)) continue;
        if (!first) ADD_LIT(out, ",");
        first = false;
        json_cstr(out, s->key);
        ADD_NUM(out, ":{\"submitted\":", s->submitted);
        ADD_NUM(out, ",\"run\":", s->run);
        ADD_LIT(out, "}");
    }
    ADD_LIT(out, "}}\n");
}

/* /_mock/reset: knobs and counters; the batches themselves stay, since a
 * client may still be polling them. */
void batch_reset(void)
{
    knob.processing_ms = knob.default_ms;
    knob.fail_create = 0;
    knob.expire = false;
    memset(&count, 0, sizeof(count));
    ids_clear();
}

void batch_free_all(void)
{
    while (batches_head) {
        struct batch *b = batches_head;
        batches_head = b->next;
        batch_free(b);
    }
    ids_clear();
    if (line_tok) json_tokener_free(line_tok);
    line_tok = NULL;
}

/* Directives: "key=value,key=value" from the x-mock header, [[mock:...]]
 * markers in prompt text, and the fault queue. */
#include "tests/mock/mock.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum dkind { K_INT, K_LONG, K_STR, K_HEAP };

/* The whole directive vocabulary as one table (see README.md). */
static const struct dkey {
    const char *name;
    enum dkind kind;
    size_t off;
    size_t size; /* K_STR buffer size */
} dkeys[] = {
#define I(n, f)                                                                                    \
    {                                                                                              \
        n, K_INT, offsetof(struct directives, f), 0                                                \
    }
#define L(n, f)                                                                                    \
    {                                                                                              \
        n, K_LONG, offsetof(struct directives, f), 0                                               \
    }
    I("status", status),
    {"code", K_STR, offsetof(struct directives, code), sizeof(((struct directives *)0)->code)},
    I("retry_after", retry_after),
    I("retry_after_ms", retry_after_ms),
    I("retry_after_date", retry_after_date),
    I("should_retry", should_retry),
    I("latency_ms", latency_ms),
    I("hang", hang),
    I("malformed", malformed),
    I("cut_after", cut_after),
    I("trickle_ms", trickle_ms),
    I("finish_length", finish_length), /* set by finish=length, below */
    {"content", K_HEAP, offsetof(struct directives, content), 0},
    L("prompt_tokens", prompt_tokens),
    L("completion_tokens", completion_tokens),
    L("cached_tokens", cached_tokens),
    L("cache_write_tokens", cache_write_tokens),
    L("cache_write_1h_tokens", cache_write_1h_tokens),
    L("reasoning_tokens", reasoning_tokens),
    I("no_usage", no_usage),
    I("repeat", repeat),
    I("tool_calls", tool_calls),
    I("thinking", thinking),
#undef I
#undef L
};

void directives_init(struct directives *d)
{
    memset(d, 0, sizeof(*d));
    for (size_t i = 0; i < sizeof(dkeys) / sizeof(dkeys[0]); i++) {
        if (dkeys[i].kind == K_INT)
            *(int *)((char *)d + dkeys[i].off) = -1;
        else if (dkeys[i].kind == K_LONG)
            *(long *)((char *)d + dkeys[i].off) = -1;
    }
}

static void tool_call_clear(struct directives *d)
{
    for (int i = 0; i < d->n_tool_call; i++)
        free(d->tool_call[i]);
    d->n_tool_call = 0;
}

void directives_free(struct directives *d)
{
    free(d->content);
    d->content = NULL;
    tool_call_clear(d);
}

/* tool_call= adds to the list of the current source and replaces the list
 * an earlier source left. */
static void tool_call_add(struct directives *d, const char *val)
{
    if (d->tool_call_gen != d->apply_gen) {
        tool_call_clear(d);
        d->tool_call_gen = d->apply_gen;
    }
    if (d->n_tool_call < MOCK_CALLS_MAX) d->tool_call[d->n_tool_call++] = strdup(val);
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    c = tolower(c);
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* %XX-decodes `len` bytes of `s` into `dst` (NUL-terminated, truncated to
 * `size`), so tests can pass commas and spaces inside a value. */
static size_t pct_decode(char *dst, size_t size, const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len && n + 1 < size; i++) {
        int hi, lo;
        if (s[i] == '%' && i + 2 < len && (hi = hexval(s[i + 1])) >= 0 &&
            (lo = hexval(s[i + 2])) >= 0) {
            dst[n++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            dst[n++] = s[i];
        }
    }
    dst[n] = '\0';
    return n;
}

static void set_one(struct directives *d, const char *k, size_t klen, const char *v, size_t vlen)
{
    char val[MOCK_TEXT_MAX];
    pct_decode(val, sizeof(val), v, vlen);
    if (klen == 6 && !memcmp(k, "finish", 6)) {
        d->finish_length = !strcmp(val, "length");
        return;
    }
    if (klen == 9 && !memcmp(k, "tool_call", 9)) {
        tool_call_add(d, val);
        return;
    }
    for (size_t i = 0; i < sizeof(dkeys) / sizeof(dkeys[0]); i++) {
        const struct dkey *dk = &dkeys[i];
        if (strlen(dk->name) != klen || memcmp(dk->name, k, klen)) continue;
        char *field = (char *)d + dk->off;
        if (dk->kind == K_INT)
            *(int *)field = !strcmp(val, "true") ? 1 : !strcmp(val, "false") ? 0 : atoi(val);
        else if (dk->kind == K_LONG)
            *(long *)field = atol(val);
        else if (dk->kind == K_STR)
            snprintf(field, dk->size, "%s", val);
        else {
            free(*(char **)field);
            *(char **)field = strdup(val);
        }
        return;
    }
}

void directives_apply(struct directives *d, const char *s, size_t len)
{
    const char *end = s + len;
    d->apply_gen++;
    while (s < end) {
        const char *comma = memchr(s, ',', (size_t)(end - s));
        const char *item_end = comma ? comma : end;
        const char *eq = memchr(s, '=', (size_t)(item_end - s));
        while (s < item_end && isspace((unsigned char)*s))
            s++;
        if (eq && eq > s) set_one(d, s, (size_t)(eq - s), eq + 1, (size_t)(item_end - eq - 1));
        s = item_end + 1;
    }
}

void directives_apply_markers(struct directives *d, const char *text, size_t len)
{
    static const char open[] = "[[mock:";
    const char *end = text + len;
    const char *p = text;
    while (p < end && (p = memmem(p, (size_t)(end - p), open, sizeof(open) - 1)) != NULL) {
        const char *body = p + sizeof(open) - 1;
        const char *close = memmem(body, (size_t)(end - body), "]]", 2);
        if (!close) return;
        directives_apply(d, body, (size_t)(close - body));
        p = close + 2;
    }
}

/* ---- the fault queue ---------------------------------------------------- */

struct fault_rule {
    struct fault_rule *next;
    int count;
    char *model;
    char *directives;
};

static struct fault_rule *rules_head, **rules_tail = &rules_head;

int faults_add(const char *model, int count, const char *dirs)
{
    struct fault_rule *r = calloc(1, sizeof(*r));
    if (!r) return -1;
    r->count = count;
    r->model = strdup(model);
    r->directives = strdup(dirs);
    *rules_tail = r;
    rules_tail = &r->next;
    return 0;
}

static void rule_free(struct fault_rule *r)
{
    free(r->model);
    free(r->directives);
    free(r);
}

void faults_clear(void)
{
    while (rules_head) {
        struct fault_rule *r = rules_head;
        rules_head = r->next;
        rule_free(r);
    }
    rules_tail = &rules_head;
}

void faults_take(const char *model, struct directives *d)
{
    for (struct fault_rule **pp = &rules_head; *pp; pp = &(*pp)->next) {
        struct fault_rule *r = *pp;
        if (strcmp(r->model, "*") && strcmp(r->model, model)) continue;
        directives_apply(d, r->directives, strlen(r->directives));
        if (--r->count > 0) return;
        *pp = r->next;
        if (rules_tail == &r->next) rules_tail = pp;
        rule_free(r);
        return;
    }
}

void faults_render(struct evbuffer *out)
{
    ADD_LIT(out, "{\"rules\":[");
    for (struct fault_rule *r = rules_head; r; r = r->next) {
        evbuffer_add_printf(out, "%s{\"model\":", r == rules_head ? "" : ",");
        json_cstr(out, r->model);
        evbuffer_add_printf(out, ",\"count\":%d,\"directives\":", r->count);
        json_cstr(out, r->directives);
        ADD_LIT(out, "}");
    }
    ADD_LIT(out, "]}\n");
}
